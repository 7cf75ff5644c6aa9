#!/usr/bin/env bash
# Install (from Debian's packages), load and start the OpenLDAP directory that Slicehub's sign-in
# tests use: a throwaway slapd on 127.0.0.1 with its own suffix, users and groups.
#
#   scripts/ldap.sh [start]    -> prints shell exports (see `env`); says on stderr whether it was
#                                 already running or has just been (re)loaded and started
#   scripts/ldap.sh stop       stops the slapd this script started (pid file in the state dir)
#   scripts/ldap.sh status     slapd's pid and whether the directory answers as expected; exit 0 if so
#   scripts/ldap.sh env        prints `export SLICEHUB_LDAP_...='...'`: what the tests need
#
# Idempotent and quiet: a warm run only checks (no root needed) and prints the exports. Warm means
# slapd runs with this script's slapd.conf and the directory answers as the script would load it:
# the admin and every user bind with their passwords, and an anonymous search of the suffix returns
# exactly the expected entries. Anything else (a test changed a password or a group, the port or
# the layout changed here) is repaired as root by loading the directory again from scratch.
#
# The directory (suffix dc=slicehub,dc=test):
#   cn=admin,dc=slicehub,dc=test                  rootdn (slapd.conf's rootpw; no entry)
#   ou=people:  uid=ldap-ann (a researcher), uid=ldap-ben (staff), uid=ldap-cat (in no group);
#               inetOrgPerson: uid, cn, sn, givenName, mail, description, userPassword (SSHA)
#   ou=groups:  cn=slicehub-staff (groupOfNames, member ldap-ben): the staff group
#               cn=proj-vision (groupOfNames, member ldap-ann): a project's group
# groupOfNames, not posixGroup: both are structural and one entry cannot be both.
# ACLs: a userPassword is for binding only (anonymous auth, self write, nobody reads it);
# everything else is readable by anyone, anonymous included.
#
# Everything lives in the state dir (SLICEHUB_LDAP_DIR, default /var/lib/slicehub-ldap): etc/
# (slapd.conf; rootpw.conf and directory.ldif, 0600, with the password hashes), db/ (the mdb
# database), run/ (pid and args files), log/slapd.log (slapd's `-d stats` output: every bind and
# search). /etc/ldap/slapd.d and Debian's own database are never read or changed; the schemas are
# read from /etc/ldap/schema. Installing the package may start Debian's own slapd on port 389 where
# no policy-rc.d forbids it; this script neither uses nor stops that one.
#
# Settings (environment):
#   SLICEHUB_LDAP_PORT=3389    the port on 127.0.0.1 (not 389: a system slapd may be there)
#   SLICEHUB_LDAP_DIR=/var/lib/slicehub-ldap
#
# The passwords below are test-only values for a directory that listens on loopback only, like
# the test PostgreSQL's; `env` prints them for the tests. Never reuse them for a real directory.
#
# Exit status: 0 ready; 3 the directory cannot be installed or started here (not root, no
# apt-get, apt-get failed); 1 anything else. Output of the steps is shown only on failure.
set -euo pipefail

STATE_DIR=${SLICEHUB_LDAP_DIR:-/var/lib/slicehub-ldap}
STATE_DIR=${STATE_DIR%/}
PORT=${SLICEHUB_LDAP_PORT:-3389}
HOST=127.0.0.1
SUFFIX=dc=slicehub,dc=test
PEOPLE=ou=people,$SUFFIX
GROUPS_OU=ou=groups,$SUFFIX
ADMIN_DN=cn=admin,$SUFFIX
ADMIN_TEST_PASSWORD=slicehub-ldap-admin-test-only
STAFF_GROUP=slicehub-staff
PROJECT_GROUP=proj-vision
SCHEMA_DIR=/etc/ldap/schema
MODULE_DIR=/usr/lib/ldap
READY_TIMEOUT_S=30
STOP_TIMEOUT_S=10
LOCK_FILE=/tmp/slicehub-ldap.lock

# The people: uid|given name|surname|what they are (description)|test-only password|groups.
PEOPLE_TABLE=(
	"ldap-ann|Ann|Archer|researcher in the vision project|ann-test-only-password|$PROJECT_GROUP"
	"ldap-ben|Ben|Baker|staff of the GPU centre|ben-test-only-password|$STAFF_GROUP"
	"ldap-cat|Cat|Carter|a researcher in no group|cat-test-only-password|"
)

ETC=$STATE_DIR/etc
RUN=$STATE_DIR/run
LOG=$STATE_DIR/log
DB=$STATE_DIR/db
CONF=$ETC/slapd.conf
URL="ldap://$HOST:$PORT"
PATH=$PATH:/usr/sbin # slapd, slapadd, slaptest, slappasswd, for a user whose PATH lacks it
# The client tools read no ldap.conf / ~/.ldaprc: a system default (TLS, BASE, URI) changes nothing.
export LDAPNOINIT=1

SCRIPT=ldap.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

validate_settings() {
	if ! [[ $PORT =~ ^[1-9][0-9]{0,4}$ ]] || ((PORT > 65535)); then
		die 1 "SLICEHUB_LDAP_PORT must be a port number, not '$PORT'"
	fi
	[[ $STATE_DIR =~ ^/[A-Za-z0-9._/-]+$ ]] || die 1 "SLICEHUB_LDAP_DIR must be an absolute path of [A-Za-z0-9._/-], not '$STATE_DIR'"
	case $STATE_DIR in
	/ | /etc | /etc/* | /var/lib/ldap | /var/lib/ldap/* | /usr | /usr/*) die 1 "SLICEHUB_LDAP_DIR must be a directory of its own, not '$STATE_DIR'" ;;
	esac
}

# "ldap-ann|...|proj-vision" -> field N (1-based) of each person, one a line.
people_field() {
	local row
	for row in "${PEOPLE_TABLE[@]}"; do
		cut -d '|' -f "$1" <<<"$row"
	done
}

# The members' uids of group $1, space-separated.
group_members() {
	local row uid groups members=()
	for row in "${PEOPLE_TABLE[@]}"; do
		uid=${row%%|*}
		groups=${row##*|}
		[[ " ${groups//,/ } " == *" $1 "* ]] && members+=("$uid")
	done
	echo "${members[*]}"
}

# ---- the configuration and the directory (pure: printed, compared with what is on disk) --------

slapd_conf() {
	cat <<EOF
# Written by scripts/ldap.sh; rewritten on every load. Slicehub's test directory.
include $SCHEMA_DIR/core.schema
include $SCHEMA_DIR/cosine.schema
include $SCHEMA_DIR/nis.schema
include $SCHEMA_DIR/inetorgperson.schema

pidfile $RUN/slapd.pid
argsfile $RUN/slapd.args
modulepath $MODULE_DIR
moduleload back_mdb

# A password is for binding: anyone may try one, its owner may change it, nobody reads it.
access to attrs=userPassword
	by self write
	by anonymous auth
	by * none
access to *
	by * read

database mdb
suffix "$SUFFIX"
rootdn "$ADMIN_DN"
# rootpw, hashed: a salted hash differs at each write, so it lives apart and this file compares.
include $ETC/rootpw.conf
directory $DB
maxsize 67108864
index objectClass eq
index uid eq
index member eq
EOF
}

# The directory as LDIF. With `hashes` (a file of "uid {SSHA}..." lines) each person gets a
# userPassword; without, it is what an anonymous search must return (the ACL hides passwords).
directory_ldif() {
	local hashes=$1 row uid given sn description groups group members member
	cat <<EOF
dn: $SUFFIX
objectClass: dcObject
objectClass: organization
dc: slicehub
o: Slicehub test directory

dn: $PEOPLE
objectClass: organizationalUnit
ou: people

dn: $GROUPS_OU
objectClass: organizationalUnit
ou: groups

EOF
	for row in "${PEOPLE_TABLE[@]}"; do
		IFS='|' read -r uid given sn description _ groups <<<"$row"
		cat <<EOF
dn: uid=$uid,$PEOPLE
objectClass: inetOrgPerson
uid: $uid
cn: $given $sn
givenName: $given
sn: $sn
mail: $uid@slicehub.test
description: $description
EOF
		[[ -n $hashes ]] && awk -v u="$uid" '$1 == u {print "userPassword: " $2}' "$hashes"
		echo
	done
	for group in "$STAFF_GROUP" "$PROJECT_GROUP"; do
		members=$(group_members "$group")
		[[ -n $members ]] || die 1 "group $group has no member; groupOfNames needs at least one"
		echo "dn: cn=$group,$GROUPS_OU"
		echo "objectClass: groupOfNames"
		echo "cn: $group"
		for member in $members; do
			echo "member: uid=$member,$PEOPLE"
		done
		echo
	done
}

# Every value was validated or is a constant without quotes: single quotes suffice.
print_env() {
	local pairs=() row uid password
	for row in "${PEOPLE_TABLE[@]}"; do
		IFS='|' read -r uid _ _ _ password _ <<<"$row"
		pairs+=("$uid:$password")
	done
	printf "export %s='%s'\n" \
		SLICEHUB_LDAP_URL "$URL" \
		SLICEHUB_LDAP_HOST "$HOST" \
		SLICEHUB_LDAP_PORT "$PORT" \
		SLICEHUB_LDAP_BASE_DN "$SUFFIX" \
		SLICEHUB_LDAP_PEOPLE_DN "$PEOPLE" \
		SLICEHUB_LDAP_GROUPS_DN "$GROUPS_OU" \
		SLICEHUB_LDAP_BIND_DN_TEMPLATE "uid={username},$PEOPLE" \
		SLICEHUB_LDAP_ADMIN_DN "$ADMIN_DN" \
		SLICEHUB_LDAP_ADMIN_TEST_PASSWORD "$ADMIN_TEST_PASSWORD" \
		SLICEHUB_LDAP_STAFF_GROUP_DN "cn=$STAFF_GROUP,$GROUPS_OU" \
		SLICEHUB_LDAP_STAFF_MEMBERS "$(group_members "$STAFF_GROUP")" \
		SLICEHUB_LDAP_PROJECT_GROUP_DN "cn=$PROJECT_GROUP,$GROUPS_OU" \
		SLICEHUB_LDAP_PROJECT_MEMBERS "$(group_members "$PROJECT_GROUP")" \
		SLICEHUB_LDAP_TEST_USERS "${pairs[*]}" \
		SLICEHUB_LDAP_DIR "$STATE_DIR"
}

# ---- checks (any user) --------------------------------------------------------------------------

binds() {
	ldapwhoami -x -H "$URL" -o nettimeout=3 -D "$1" -w "$2" >/dev/null 2>&1
}

# The directory answers as loaded: the admin and each person bind, an anonymous search of the
# suffix returns exactly the expected entries (no password among them).
directory_answers() {
	local row uid password
	command -v ldapsearch >/dev/null 2>&1 && command -v ldapwhoami >/dev/null 2>&1 || return 1
	binds "$ADMIN_DN" "$ADMIN_TEST_PASSWORD" || return 1
	for row in "${PEOPLE_TABLE[@]}"; do
		IFS='|' read -r uid _ _ _ password _ <<<"$row"
		binds "uid=$uid,$PEOPLE" "$password" || return 1
	done
	cmp -s <(ldapsearch -x -LLL -o ldif-wrap=no -o nettimeout=3 -H "$URL" -b "$SUFFIX" 2>/dev/null) \
		<(directory_ldif "")
}

# slapd runs from this script's slapd.conf, and the directory is what it loads.
warm() {
	[[ -r $CONF ]] && cmp -s "$CONF" <(slapd_conf) &&
		live_pid "$RUN/slapd.pid" slapd >/dev/null && directory_answers
}

# ---- root: install, load, start, stop -----------------------------------------------------------

# "uid {SSHA}..." for each person, from slappasswd.
password_hashes() {
	local row uid password hash
	for row in "${PEOPLE_TABLE[@]}"; do
		IFS='|' read -r uid _ _ _ password _ <<<"$row"
		hash=$(slappasswd -h '{SSHA}' -s "$password") || die 1 "slappasswd failed"
		echo "$uid $hash"
	done
}

# Writes what `function args...` prints to `file` with `mode`.
write_file() {
	local file=$1 mode=$2 tmp
	shift 2
	tmp=$(mktemp "$file.XXXXXX")
	"$@" >"$tmp"
	chmod "$mode" "$tmp"
	mv -f "$tmp" "$file"
}

rootpw_conf() {
	local hash
	hash=$(slappasswd -h '{SSHA}' -s "$ADMIN_TEST_PASSWORD") || die 1 "slappasswd failed"
	echo "rootpw $hash"
}

# The configuration and the directory written again and loaded into an empty database; slapd
# must not run.
load() {
	local hashes
	install -d -m 0755 "$STATE_DIR" "$ETC" "$LOG"
	install -d -o openldap -g openldap -m 0755 "$RUN" # the pid file: warm checks need no root
	write_file "$CONF" 0644 slapd_conf
	# slapd reads its configuration after it has become openldap.
	write_file "$ETC/rootpw.conf" 0640 rootpw_conf
	chgrp openldap "$ETC/rootpw.conf"
	hashes=$(mktemp)
	password_hashes >"$hashes"
	write_file "$ETC/directory.ldif" 0600 directory_ldif "$hashes"
	rm -f "$hashes"
	rm -rf "$DB"
	install -d -m 0700 "$DB"
	quietly slaptest -u -f "$CONF" || die 1 "slaptest refused $CONF"
	quietly slapadd -q -f "$CONF" -l "$ETC/directory.ldif" || die 1 "slapadd of $ETC/directory.ldif failed"
	chown -R openldap:openldap "$DB"
}

start() {
	local pid
	validate_settings
	if warm; then
		pid=$(live_pid "$RUN/slapd.pid" slapd)
		echo "$SCRIPT: slapd already running (pid $pid) on $URL; the test directory answers as expected" >&2
		print_env
		return 0
	fi
	((EUID == 0)) || die 3 "the test directory is not running here as expected and starting it needs root: sudo $0 start"

	# Two test runs starting at once must not both install or load.
	exec 9>"$LOCK_FILE"
	flock 9
	if ! warm; then
		install_packages slapd ldap-utils
		{ command -v slapd && command -v ldapsearch; } >/dev/null || die 1 "slapd/ldapsearch missing after install"
		getent passwd openldap >/dev/null || die 1 "user openldap missing after installing slapd"
		[[ -r $SCHEMA_DIR/inetorgperson.schema && -e $MODULE_DIR/back_mdb.so ]] ||
			die 1 "$SCHEMA_DIR/*.schema or $MODULE_DIR/back_mdb.so missing after installing slapd"

		stop_daemon "$RUN/slapd.pid" slapd
		load
		# In the foreground (-d) under its own session: its debug output is the log.
		: >"$LOG/slapd.log"
		setsid slapd -d stats -h "$URL/" -f "$CONF" -u openldap -g openldap \
			</dev/null >>"$LOG/slapd.log" 2>&1 9>&- &
		wait_until_warm $! ||
			die 1 "slapd does not answer as expected on $URL; log $LOG/slapd.log:"$'\n'"$(log_tail "$LOG/slapd.log")"
		pid=$(live_pid "$RUN/slapd.pid" slapd)
		echo "$SCRIPT: started slapd (pid $pid) on $URL with the test directory loaded afresh" >&2
	else
		pid=$(live_pid "$RUN/slapd.pid" slapd)
		echo "$SCRIPT: slapd already running (pid $pid) on $URL; the test directory answers as expected" >&2
	fi
	print_env
}

# Polls `warm` every 0.1 s until it holds; fails when slapd (`pid`) exits or time runs out.
wait_until_warm() {
	local pid=$1 deadline=$((SECONDS + READY_TIMEOUT_S))
	until warm; do
		kill -0 "$pid" 2>/dev/null || return 1
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

stop() {
	validate_settings
	live_pid "$RUN/slapd.pid" slapd >/dev/null || {
		echo "$SCRIPT: slapd is not running" >&2
		return 0
	}
	((EUID == 0)) || die 3 "stopping the test directory needs root: sudo $0 stop"
	exec 9>"$LOCK_FILE"
	flock 9
	stop_daemon "$RUN/slapd.pid" slapd
	echo "$SCRIPT: stopped slapd" >&2
}

status() {
	local pid
	validate_settings
	if pid=$(live_pid "$RUN/slapd.pid" slapd); then
		echo "slapd: running (pid $pid) on $URL"
	else
		echo "slapd: not running"
	fi
	if directory_answers; then
		echo "directory: answers as expected ($SUFFIX)"
	else
		echo "directory: does not answer as expected (scripts/ldap.sh start loads it again)"
		return 1
	fi
}

command=${1:-start}
(($# > 0)) && shift
(($# == 0)) || die 1 "$command takes no arguments"
case $command in
start) start ;;
stop) stop ;;
status) status ;;
env)
	validate_settings
	print_env
	;;
*) die 1 "unknown command '$command' (start, stop, status, env)" ;;
esac
