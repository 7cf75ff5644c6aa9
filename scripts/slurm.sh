#!/usr/bin/env bash
# Install (from Debian's packages), configure and start the Slurm that Slicehub's tests use: several
# nodes on this one machine (n1, n2, ...: one slurmd each, Debian's build has MULTIPLE_SLURMD), GPU
# slices as GRES on fake character devices, each node its own.
#
#   scripts/slurm.sh [start] [--accounting | --no-accounting]   -> prints shell exports (see `env`)
#   scripts/slurm.sh stop          stops the daemons this script started (pid files in the state dir),
#                                  every node's slurmd
#   scripts/slurm.sh status        daemons and node states; exit 0 when every node takes jobs
#   scripts/slurm.sh env           prints `export SLURM_CONF=...` and the cluster's facts
#   scripts/slurm.sh ensure-account NAME         a Slurm account (accounting only; else a note)
#   scripts/slurm.sh ensure-user NAME ACCOUNT    a user's association with ACCOUNT (same)
#
# Idempotent and quiet: a warm run only checks (no root needed) and prints the exports.
# Everything lives in the state dir (SLICEHUB_SLURM_DIR, default /var/lib/slicehub-slurm): etc/
# (slurm.conf, gres.conf, cgroup.conf, slurmdbd.conf, mariadb.cnf), dev/NODE/gpuN (the fake
# devices, `mknod c 195 M`, M unique on the machine), run/ (pid files, slurmd-NODE.pid), log/
# (slurmd-NODE.log), spool/ (slurmd-NODE/), mysql/ (MariaDB's data, accounting only).
# Every node's slurmd listens on 127.0.0.1 at its own port (n1 16818, n2 16819, ...); the hub
# reaches a server on any node at that address.
# /etc/slurm is never read: the commands need SLURM_CONF (printed), the daemons get `-f`.
# munged is the system's (socket /run/munge/munge.socket.2, key /etc/munge/munge.key).
#
# Settings (environment):
#   SLICEHUB_SLURM_NODES=2  how many nodes (1-16), named n1..nN. A start with another count
#     restarts the daemons; jobs on a node that goes away are cancelled (and say so on stderr).
#   SLICEHUB_SLURM_GRES="1g.10gb:20,3g.40gb:2,h100:1"  GRES gpu types and counts on EACH node
#     (the default cluster: 40 1g.10gb, 4 3g.40gb and 2 whole H100s over two nodes)
#   SLICEHUB_SLURM_CPUS=32  SLICEHUB_SLURM_MEMORY_MB=128000  what each node declares (overrides)
#   SLICEHUB_SLURM_ACCOUNTING=1 (same as --accounting): slurmdbd + MariaDB, sacct, sacctmgr,
#     AccountingStorageEnforce=associations,limits. Sticky: once on, a plain `start` keeps it;
#     `--no-accounting` or SLICEHUB_SLURM_ACCOUNTING=0 turns it off. Default: off.
#   SLICEHUB_SLURM_CGROUP=1: proctrack/cgroup + task/cgroup (cgroup v1) with ConstrainDevices=yes:
#     a job can open only its own slices' devices and sees them as 0..n-1, as on real hardware.
#     0: proctrack/linuxproc + task/none, which need nothing from the kernel (device numbers are
#     node-wide). Unset: what runs now, else 1 when a cgroup v1 devices+freezer hierarchy takes a
#     new group here, else 0.
#   SLICEHUB_SLURM_DB_PORT=3307  MariaDB's port on 127.0.0.1 (not 3306: a system MariaDB may be there)
#
# Exit status: 0 ready; 3 Slurm cannot be installed or started here (not root, no apt-get, apt-get
# failed, mknod refused); 1 anything else. Output of the steps is shown only on failure.
set -euo pipefail

STATE_DIR=${SLICEHUB_SLURM_DIR:-/var/lib/slicehub-slurm}
STATE_DIR=${STATE_DIR%/}
NODE_COUNT=${SLICEHUB_SLURM_NODES:-2}
GRES_SPEC=${SLICEHUB_SLURM_GRES:-1g.10gb:20,3g.40gb:2,h100:1}
NODE_CPUS=${SLICEHUB_SLURM_CPUS:-32}
NODE_MEMORY_MB=${SLICEHUB_SLURM_MEMORY_MB:-128000}
DB_PORT=${SLICEHUB_SLURM_DB_PORT:-3307}
CLUSTER=slicehub
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASSWORD=slicehub-slurmdbd # loopback only, like the test PostgreSQL's password
GPU_MAJOR=195                 # NVIDIA's character-device major; never /dev/null's 1 3
SLURMD_PORT=16818             # n1's; node k listens on SLURMD_PORT + k - 1 (6819 is slurmdbd's)
MAX_NODES=16
READY_TIMEOUT_S=60
STOP_TIMEOUT_S=20
LOCK_FILE=/tmp/slicehub-slurm.lock

ETC=$STATE_DIR/etc
RUN=$STATE_DIR/run
LOG=$STATE_DIR/log
CONF=$ETC/slurm.conf
export SLURM_CONF=$CONF

SCRIPT=slurm.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# This machine's name: the controller's host and every node's NodeHostname.
host_name() {
	local host
	host=$(hostname -s)
	[[ $host =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$ ]] || die 1 "hostname -s gives '$host', not usable as a Slurm host name"
	echo "$host"
}

# The nodes, one a line: n1 .. nN.
node_names() {
	local k
	for ((k = 1; k <= NODE_COUNT; k++)); do echo "n$k"; done
}

in_layout() {
	node_names | grep -qxF "$1"
}

# "1g.10gb:40,3g.40gb:4" -> lines "1g.10gb 40"; refuses anything else.
gres_entries() {
	local entry type count total=0
	IFS=, read -r -a entries <<<"$GRES_SPEC"
	((${#entries[@]} > 0)) || die 1 "SLICEHUB_SLURM_GRES is empty"
	for entry in "${entries[@]}"; do
		type=${entry%:*}
		count=${entry##*:}
		# Lower case: sacct lower-cases TRES names, so "H100" would not match its own usage.
		[[ $entry == *:* && $type =~ ^[a-z0-9][a-z0-9._-]{0,31}$ && $count =~ ^[1-9][0-9]{0,2}$ ]] ||
			die 1 "SLICEHUB_SLURM_GRES entry '$entry' is not TYPE:COUNT (type [a-z0-9._-], count 1-999)"
		total=$((total + count))
		echo "$type $count"
	done
	((total * NODE_COUNT <= 1000)) || die 1 "SLICEHUB_SLURM_GRES declares $total devices on each of $NODE_COUNT nodes; at most 1000 in all"
}

validate_settings() {
	[[ $NODE_COUNT =~ ^[1-9][0-9]?$ && $NODE_COUNT -le $MAX_NODES ]] || die 1 "SLICEHUB_SLURM_NODES must be 1-$MAX_NODES, not '$NODE_COUNT'"
	[[ $NODE_CPUS =~ ^[1-9][0-9]{0,3}$ ]] || die 1 "SLICEHUB_SLURM_CPUS must be 1-9999, not '$NODE_CPUS'"
	[[ $NODE_MEMORY_MB =~ ^[1-9][0-9]{0,8}$ ]] || die 1 "SLICEHUB_SLURM_MEMORY_MB must be a positive integer, not '$NODE_MEMORY_MB'"
	[[ $DB_PORT =~ ^[1-9][0-9]{0,4}$ ]] || die 1 "SLICEHUB_SLURM_DB_PORT must be a port number, not '$DB_PORT'"
	[[ $STATE_DIR =~ ^/[A-Za-z0-9._/-]+$ ]] || die 1 "SLICEHUB_SLURM_DIR must be an absolute path of [A-Za-z0-9._/-], not '$STATE_DIR'"
	gres_entries >/dev/null
}

# ---- the configuration (pure: printed, compared with what is on disk) ----------------------------

slurm_conf() {
	local host=$1 accounting=$2 gres="" tres="gres/gpu" type count node k=0 nodes
	while read -r type count; do
		gres+="${gres:+,}gpu:$type:$count"
		tres+=",gres/gpu:$type"
	done < <(gres_entries)
	cat <<EOF
# Written by scripts/slurm.sh; rewritten on every start. Slicehub's test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
PlugStackConfig=$ETC/plugstack.conf
StateSaveLocation=$STATE_DIR/spool/slurmctld
# One slurmd per node on this machine (slurmd -N NODE): %n keeps their files apart.
SlurmdSpoolDir=$STATE_DIR/spool/slurmd-%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# Daemons bind to 127.0.0.1 (the node's and controller's address), not to every interface.
CommunicationParameters=NoInAddrAny
SlurmctldPort=6817
# Tests want answers in seconds, and a node back as soon as it registers again.
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
ReturnToService=2
SchedulerType=sched/backfill
# Backfill reservations hold whole nodes: one waiting h100 job would keep 1g.10gb jobs off a
# node until its planned start. No reservation for a job waiting < 1 h: each job takes what is free.
SchedulerParameters=bf_interval=1,sched_min_interval=100000,bf_min_age_reserve=3600
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job without --mem takes the whole node's memory and the rest queue.
DefMemPerCPU=2000
GresTypes=gpu
SlurmdParameters=config_overrides
EOF
	if ((USE_CGROUP)); then
		echo "ProctrackType=proctrack/cgroup"
		echo "TaskPlugin=task/cgroup"
	else
		echo "ProctrackType=proctrack/linuxproc"
		echo "TaskPlugin=task/none"
	fi
	if ((accounting)); then
		cat <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStorageTRES=$tres
AccountingStorageEnforce=associations,limits
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
EOF
	else
		echo "AccountingStorageType=accounting_storage/none"
		echo "JobAcctGatherType=jobacct_gather/none"
		echo "JobCompType=jobcomp/none"
	fi
	while read -r node; do
		echo "NodeName=$node NodeHostname=$host NodeAddr=127.0.0.1 Port=$((SLURMD_PORT + k)) CPUs=$NODE_CPUS RealMemory=$NODE_MEMORY_MB Gres=$gres State=UNKNOWN"
		k=$((k + 1))
	done < <(node_names)
	nodes=$(node_names | paste -sd,)
	cat <<EOF
PartitionName=gpu Nodes=$nodes Default=YES MaxTime=7-00:00:00 State=UP
PartitionName=cpu Nodes=$nodes Default=NO MaxTime=7-00:00:00 State=UP
EOF
}

gres_conf() {
	local node type count first last
	echo "# Written by scripts/slurm.sh. Fake GPU slices: character devices $GPU_MAJOR:M under $STATE_DIR/dev/NODE."
	echo "AutoDetect=off"
	while read -r node; do
		first=0
		while read -r type count; do
			last=$((first + count - 1))
			if ((count == 1)); then
				echo "NodeName=$node Name=gpu Type=$type File=$STATE_DIR/dev/$node/gpu$first"
			else
				echo "NodeName=$node Name=gpu Type=$type File=$STATE_DIR/dev/$node/gpu[$first-$last]"
			fi
			first=$((last + 1))
		done < <(gres_entries)
	done < <(node_names)
}

cgroup_conf() {
	# Cores and memory are declared beyond the machine's (config_overrides): constrain devices only.
	cat <<EOF
# Written by scripts/slurm.sh.
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainDevices=yes
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainSwapSpace=no
EOF
}

slurmdbd_conf() {
	cat <<EOF
# Written by scripts/slurm.sh.
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASSWORD
StorageLoc=$DB_NAME
EOF
}

mariadb_cnf() {
	cat <<EOF
# Written by scripts/slurm.sh. MariaDB for slurmdbd only; loopback only.
[mariadbd]
user=mysql
datadir=$STATE_DIR/mysql
socket=$RUN/mysql/mysqld.sock
pid-file=$RUN/mysql/mariadbd.pid
port=$DB_PORT
bind-address=127.0.0.1
skip-name-resolve
log-error=$LOG/mariadb/error.log
innodb_buffer_pool_size=128M
innodb_lock_wait_timeout=900
[client]
socket=$RUN/mysql/mysqld.sock
EOF
}

# Is `file` exactly what `function args...` prints? (Unreadable counts as different.)
same_as() {
	local file=$1
	shift
	[[ -r $file ]] && cmp -s "$file" <("$@")
}

# Writes what `function args...` prints to `file` (mode `mode`) when it differs; status 0 if it
# changed the file, 1 if the file was already right.
write_if_changed() {
	local file=$1 mode=$2 tmp
	shift 2
	same_as "$file" "$@" && return 1
	tmp=$(mktemp "$file.XXXXXX")
	"$@" >"$tmp"
	chmod "$mode" "$tmp"
	mv -f "$tmp" "$file"
	return 0
}

# Accounting wanted: an explicit flag or SLICEHUB_SLURM_ACCOUNTING wins, else what runs now.
accounting_wanted() {
	case ${ACCOUNTING_FLAG:-${SLICEHUB_SLURM_ACCOUNTING:-}} in
	1 | yes | true | on) echo 1 ;;
	0 | no | false | off) echo 0 ;;
	"") if [[ -r $CONF ]] && grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$CONF"; then echo 1; else echo 0; fi ;;
	*) die 1 "SLICEHUB_SLURM_ACCOUNTING must be 1 or 0, not '${SLICEHUB_SLURM_ACCOUNTING}'" ;;
	esac
}

# cgroup wanted: SLICEHUB_SLURM_CGROUP if set, else what runs now, else (when `probe`, as root)
# whether cgroup v1 works here, else 0.
cgroup_wanted() {
	local probe=$1
	case ${SLICEHUB_SLURM_CGROUP:-} in
	1 | yes | true | on) echo 1 ;;
	0 | no | false | off) echo 0 ;;
	"")
		if [[ -r $CONF ]] && grep -q '^ProctrackType=' "$CONF"; then
			if grep -q '^ProctrackType=proctrack/cgroup' "$CONF"; then echo 1; else echo 0; fi
		elif ((probe)) && cgroup_v1_works devices && cgroup_v1_works freezer; then
			echo 1
		else
			echo 0
		fi
		;;
	*) die 1 "SLICEHUB_SLURM_CGROUP must be 1 or 0, not '${SLICEHUB_SLURM_CGROUP}'" ;;
	esac
}

# Slurm 22.05's cgroup/v2 wants systemd: only a v1 controller that takes a new group counts.
cgroup_v1_works() {
	local dir=/sys/fs/cgroup/$1/slicehub-probe.$$ status=1
	mkdir "$dir" 2>/dev/null || return 1
	[[ -e $dir/cgroup.procs && -e $dir/tasks ]] && status=0
	rmdir "$dir" 2>/dev/null || true
	return "$status"
}

accounting_on() {
	[[ -r $CONF ]] && grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$CONF"
}

# ---- daemons -----------------------------------------------------------------------------------

# Polls `check` every 0.2 s until it succeeds or `seconds` pass.
wait_for() {
	local seconds=$1 deadline
	shift
	deadline=$((SECONDS + seconds))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

munge_works() {
	munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1
}

start_munge() {
	munge_works && return 0
	local key=/etc/munge/munge.key
	install -d -o munge -g munge -m 0755 /run/munge
	install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge "$RUN/munge"
	if [[ ! -s $key ]]; then
		quietly mungekey --create --keyfile="$key" --force || die 1 "mungekey failed"
	fi
	chown munge:munge "$key"
	chmod 0400 "$key"
	quietly runuser -u munge -- munged --pid-file="$RUN/munge/munged.pid" 9>&- ||
		die 1 "munged did not start; log:"$'\n'"$(log_tail /var/log/munge/munged.log)"
	wait_for 10 munge_works || die 1 "munged started but munge -n | unmunge fails"
}

as_db_root() {
	mariadb --defaults-file="$ETC/mariadb.cnf" -u root --batch --skip-column-names "$@"
}

mariadb_pingable() {
	mariadb-admin --defaults-file="$ETC/mariadb.cnf" -u root --connect-timeout=2 ping
}

start_mariadb() {
	install -d -o mysql -g mysql -m 0750 "$STATE_DIR/mysql" "$LOG/mariadb"
	install -d -o mysql -g mysql -m 0755 "$RUN/mysql" # the pid file: warm checks need no root
	write_if_changed "$ETC/mariadb.cnf" 0644 mariadb_cnf || true
	if ! live_pid "$RUN/mysql/mariadbd.pid" mariadbd >/dev/null; then
		if [[ ! -d $STATE_DIR/mysql/mysql ]]; then
			quietly mariadb-install-db --defaults-file="$ETC/mariadb.cnf" --user=mysql \
				--auth-root-authentication-method=socket --skip-test-db 9>&- ||
				die 1 "mariadb-install-db failed"
		fi
		setsid mariadbd --defaults-file="$ETC/mariadb.cnf" </dev/null >/dev/null 2>&1 9>&- &
	fi
	wait_for "$READY_TIMEOUT_S" mariadb_pingable ||
		die 1 "MariaDB did not answer on 127.0.0.1:$DB_PORT after ${READY_TIMEOUT_S}s; log:"$'\n'"$(log_tail "$LOG/mariadb/error.log")"
	as_db_root -e "CREATE DATABASE IF NOT EXISTS $DB_NAME;
		CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
		ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
		GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';" ||
		die 1 "could not create MariaDB database $DB_NAME / user $DB_USER"
}

dbd_answers() {
	sacctmgr -n -P list cluster format=cluster
}

start_slurmdbd() {
	write_if_changed "$ETC/slurmdbd.conf" 0600 slurmdbd_conf && stop_daemon "$RUN/slurmdbd.pid" slurmdbd
	if ! live_pid "$RUN/slurmdbd.pid" slurmdbd >/dev/null; then
		quietly slurmdbd 9>&- || die 1 "slurmdbd did not start; log:"$'\n'"$(log_tail "$LOG/slurmdbd.log")"
	fi
	wait_for "$READY_TIMEOUT_S" dbd_answers ||
		die 1 "slurmdbd did not answer after ${READY_TIMEOUT_S}s; log:"$'\n'"$(log_tail "$LOG/slurmdbd.log")"
	if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=cluster) ]]; then
		quietly sacctmgr -i add cluster "$CLUSTER" || die 1 "sacctmgr add cluster $CLUSTER failed"
	fi
}

# "IDLE", "MIXED", "IDLE+DRAIN", "DOWN*"... and the Reason, from scontrol.
node_field() {
	scontrol show node "$1" -o 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"
}

node_takes_jobs() {
	local state
	state=$(node_field "$1" State) || return 1
	[[ $state =~ ^(IDLE|MIXED|ALLOCATED|COMPLETING)$ ]]
}

slurmd_pidfile() {
	echo "$RUN/slurmd-$1.pid"
}

# Every slurmd pid file there is: this layout's nodes, nodes of an earlier layout, and
# run/slurmd.pid of the single-node cluster that earlier versions of this script started.
all_slurmd_pidfiles() {
	local f
	for f in "$RUN/slurmd.pid" "$RUN"/slurmd-*.pid; do
		[[ -e $f ]] && echo "$f"
	done
	return 0
}

# Is this pid file a slurmd's of this layout (run/slurmd-NODE.pid, NODE one of node_names)?
layout_pidfile() {
	local node=${1#"$RUN"/slurmd-}
	[[ $1 == "$RUN"/slurmd-*.pid ]] && in_layout "${node%.pid}"
}

# A slurmd runs that is not one of this layout's nodes (an earlier layout's, or the old single node's).
stray_slurmd() {
	local f
	while read -r f; do
		! layout_pidfile "$f" && live_pid "$f" slurmd >/dev/null && return 0
	done < <(all_slurmd_pidfiles)
	return 1
}

daemons_running() {
	local node
	live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null || return 1
	while read -r node; do
		live_pid "$(slurmd_pidfile "$node")" slurmd >/dev/null || return 1
	done < <(node_names)
	! stray_slurmd || return 1
	if (($1)); then
		# mariadbd's pid file is not world-readable; "ping" answers any user (even when denied).
		live_pid "$RUN/slurmdbd.pid" slurmdbd >/dev/null && mariadb_pingable >/dev/null 2>&1
	fi
}

all_nodes_take_jobs() {
	local node
	while read -r node; do
		node_takes_jobs "$node" || return 1
	done < <(node_names)
}

# Every node answers and every config file is what this run would write: nothing to do.
warm() {
	local host=$1 accounting=$2
	same_as "$CONF" slurm_conf "$host" "$accounting" && same_as "$ETC/gres.conf" gres_conf &&
		{ ((!USE_CGROUP)) || same_as "$ETC/cgroup.conf" cgroup_conf; } &&
		daemons_running "$accounting" && munge_works && all_nodes_take_jobs
}

# Every value was validated to hold no quote, space or shell metacharacter: single quotes suffice.
# SLICEHUB_SLURM_GRES is per node; SLICEHUB_SLURM_NODE_NAMES lists the nodes (n1,n2).
print_env() {
	local accounting=$1
	printf "export %s='%s'\n" SLURM_CONF "$CONF" SLICEHUB_SLURM_DIR "$STATE_DIR" \
		SLICEHUB_SLURM_NODES "$NODE_COUNT" SLICEHUB_SLURM_NODE_NAMES "$(node_names | paste -sd,)" \
		SLICEHUB_SLURM_CLUSTER "$CLUSTER" SLICEHUB_SLURM_GRES "$GRES_SPEC" \
		SLICEHUB_SLURM_ACCOUNTING "$accounting" SLICEHUB_SLURM_CGROUP "$USE_CGROUP"
}

# dev/NODE/gpuI, I counted per node as on a real node; the minor number is unique on the
# machine, so that ConstrainDevices keeps a job on n2 off n1's devices. Devices of an earlier
# layout (dev/gpuN of the single node, dev/NODE of a node that went away) are removed.
make_devices() {
	local node type count minor=0 i j dev path
	install -d -m 0755 "$STATE_DIR/dev"
	rm -f "$STATE_DIR"/dev/gpu[0-9]*
	for path in "$STATE_DIR"/dev/n[0-9]*; do
		if [[ -d $path ]] && ! in_layout "${path##*/}"; then rm -rf "$path"; fi
	done
	while read -r node; do
		install -d -m 0755 "$STATE_DIR/dev/$node"
		i=0
		while read -r type count; do
			for ((j = 0; j < count; j++, i++, minor++)); do
				dev=$STATE_DIR/dev/$node/gpu$i
				if [[ ! -c $dev || $(stat -c '%t:%T' "$dev") != "$(printf '%x:%x' "$GPU_MAJOR" "$minor")" ]]; then
					rm -f "$dev"
					mknod -m 0666 "$dev" c "$GPU_MAJOR" "$minor" 2>/dev/null ||
						die 3 "mknod $dev c $GPU_MAJOR $minor refused: fake GPU devices cannot be made here"
				fi
			done
		done < <(gres_entries)
	done < <(node_names)
}

wait_node_ready() {
	local node=$1 deadline=$((SECONDS + READY_TIMEOUT_S)) state resumed=0
	while :; do
		state=$(node_field "$node" State || true)
		case $state in
		IDLE | MIXED | ALLOCATED | COMPLETING) return 0 ;;
		*DRAIN* | *FAIL*)
			# A drain left from an earlier configuration; one resume, then it must hold.
			if ((resumed == 0)); then
				scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
				resumed=1
			fi
			;;
		esac
		if ((SECONDS >= deadline)); then
			die 1 "node $node is '${state:-unknown}' (Reason: $(node_field "$node" Reason || true)) after ${READY_TIMEOUT_S}s; slurmctld log:"$'\n'"$(log_tail "$LOG/slurmctld.log")"$'\n'"  slurmd log ($node):"$'\n'"$(log_tail "$LOG/slurmd-$node.log")"
		fi
		sleep 0.2
	done
}

# Nodes the running controller has that this layout does not (the single node `hostname -s` of
# earlier versions of this script, or n3 when going from three nodes to two): drained, and their
# jobs cancelled while that controller still knows them, so that no job's processes outlive its
# node. Their names are kept in GONE_NODES (see forget_gone_nodes).
GONE_NODES=()
retire_gone_nodes() {
	local node ids
	live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null || return 0
	while read -r node; do
		if [[ -z $node ]] || in_layout "$node"; then continue; fi
		GONE_NODES+=("$node")
		scontrol update nodename="$node" state=drain reason="not in the new layout" >/dev/null 2>&1 || true
		ids=$(squeue -h -w "$node" -o %i 2>/dev/null | paste -sd' ') || true
		[[ -n $ids ]] || continue
		echo "$SCRIPT: node $node is not in the new layout ($(node_names | paste -sd' ')): cancelling its jobs $ids" >&2
		# shellcheck disable=SC2086 # a list of job ids
		scancel $ids >/dev/null 2>&1 || true
		wait_for "$STOP_TIMEOUT_S" no_jobs_on "$node" ||
			echo "$SCRIPT: jobs still on node $node after ${STOP_TIMEOUT_S}s: $(squeue -h -w "$node" -o %i | paste -sd' ')" >&2
	done < <(sinfo -h -N -o %N 2>/dev/null | sort -u)
}

no_jobs_on() {
	[[ -z $(squeue -h -w "$1" -o %i 2>/dev/null) ]]
}

# The cgroups (v1) that the slurmd of a retired node made, once empty: slurm_NODE per controller.
forget_gone_nodes() {
	local node dir
	for node in "${GONE_NODES[@]}"; do
		for dir in /sys/fs/cgroup/*/"slurm_$node"; do
			[[ -d $dir ]] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
		done
	done
	return 0
}

# Stops the slurmd of every node not in this layout, and with `all` every slurmd; removes the
# spool dirs of nodes gone (spool/slurmd of the single node, spool/slurmd-nK).
stop_slurmds() {
	local all=$1 f spool
	while read -r f; do
		if ((all)) || ! layout_pidfile "$f"; then stop_daemon "$f" slurmd; fi
	done < <(all_slurmd_pidfiles)
	for spool in "$STATE_DIR/spool/slurmd" "$STATE_DIR"/spool/slurmd-*; do
		if [[ -d $spool ]] && { [[ $spool == */slurmd ]] || ! in_layout "${spool##*/slurmd-}"; }; then
			rm -rf "$spool"
		fi
	done
}

start() {
	local host accounting changed=0 node
	validate_settings
	host=$(host_name)
	accounting=$(accounting_wanted)
	USE_CGROUP=$(cgroup_wanted 0)
	if warm "$host" "$accounting"; then
		print_env "$accounting"
		return 0
	fi
	((EUID == 0)) || die 3 "Slurm is not running here as configured and starting it needs root: sudo $0 start"

	# Two test runs starting at once must not both install or start.
	exec 9>"$LOCK_FILE"
	flock 9
	USE_CGROUP=$(cgroup_wanted 1)

	install_packages slurm-wlm munge
	((accounting)) && install_packages slurmdbd mariadb-server
	{ command -v slurmctld && command -v slurmd; } >/dev/null || die 1 "slurmctld/slurmd missing after install"

	install -d -m 0755 "$STATE_DIR" "$ETC" "$RUN" "$LOG" "$STATE_DIR/spool"
	install -d -m 0700 "$STATE_DIR/spool/slurmctld"
	while read -r node; do
		# 0755: a job runs its script from here as the user's own account (0700 refused it)
		install -d -m 0755 "$STATE_DIR/spool/slurmd-$node"
	done < <(node_names)
	retire_gone_nodes
	make_devices
	[[ -e $ETC/plugstack.conf ]] || : >"$ETC/plugstack.conf"
	write_if_changed "$CONF" 0644 slurm_conf "$host" "$accounting" && changed=1
	write_if_changed "$ETC/gres.conf" 0644 gres_conf && changed=1
	if ((USE_CGROUP)); then
		write_if_changed "$ETC/cgroup.conf" 0644 cgroup_conf && changed=1
	elif [[ -e $ETC/cgroup.conf ]]; then
		rm -f "$ETC/cgroup.conf"
		changed=1
	fi

	start_munge
	if ((accounting)); then
		start_mariadb
		start_slurmdbd
	else
		stop_daemon "$RUN/slurmdbd.pid" slurmdbd
		stop_daemon "$RUN/mysql/mariadbd.pid" mariadbd
	fi

	# Node and GRES definitions are read at start only: a changed config restarts the controller
	# and every slurmd. Jobs on the nodes kept survive (state in spool/slurmctld; slurmstepd
	# outlives slurmd).
	stop_slurmds "$changed"
	forget_gone_nodes
	((changed)) && stop_daemon "$RUN/slurmctld.pid" slurmctld
	if ! live_pid "$RUN/slurmctld.pid" slurmctld >/dev/null; then
		quietly slurmctld -f "$CONF" 9>&- || die 1 "slurmctld did not start; log:"$'\n'"$(log_tail "$LOG/slurmctld.log")"
	fi
	wait_for "$READY_TIMEOUT_S" scontrol ping ||
		die 1 "slurmctld does not answer scontrol ping after ${READY_TIMEOUT_S}s; log:"$'\n'"$(log_tail "$LOG/slurmctld.log")"
	while read -r node; do
		if ! live_pid "$(slurmd_pidfile "$node")" slurmd >/dev/null; then
			quietly slurmd -N "$node" -f "$CONF" 9>&- ||
				die 1 "slurmd of node $node did not start; log:"$'\n'"$(log_tail "$LOG/slurmd-$node.log")"
		fi
	done < <(node_names)
	while read -r node; do
		wait_node_ready "$node"
	done < <(node_names)
	print_env "$accounting"
}

stop() {
	local f
	((EUID == 0)) || die 3 "stopping the test Slurm needs root: sudo $0 stop"
	exec 9>"$LOCK_FILE"
	flock 9
	while read -r f; do
		stop_daemon "$f" slurmd
	done < <(all_slurmd_pidfiles)
	stop_daemon "$RUN/slurmctld.pid" slurmctld
	stop_daemon "$RUN/slurmdbd.pid" slurmdbd
	stop_daemon "$RUN/mysql/mariadbd.pid" mariadbd
	# munged only when this script started it (its pid file is ours); others may use it.
	stop_daemon "$RUN/munge/munged.pid" munged
}

status() {
	local node name pidfile comm pid ready=1
	for name in slurmctld:slurmctld.pid slurmdbd:slurmdbd.pid mariadbd:mysql/mariadbd.pid munged:munge/munged.pid; do
		comm=${name%%:*}
		pidfile=$RUN/${name#*:}
		if pid=$(live_pid "$pidfile" "$comm"); then
			echo "$comm: running (pid $pid)"
		else
			echo "$comm: not running"
		fi
	done
	if accounting_on; then echo "accounting: on"; else echo "accounting: off"; fi
	echo "cgroup: $(cgroup_wanted 0)"
	while read -r node; do
		if pid=$(live_pid "$(slurmd_pidfile "$node")" slurmd); then pid="slurmd running (pid $pid)"; else pid="slurmd not running"; fi
		echo "node $node: $pid, $(node_field "$node" State || echo unknown) $(node_field "$node" Reason || true)"
		node_takes_jobs "$node" || ready=0
	done < <(node_names)
	if stray_slurmd; then
		echo "a slurmd runs for a node not in this layout: $0 start restarts them"
		ready=0
	fi
	((ready)) || return 1
}

# sacctmgr only when accounting is on; prints a note and succeeds otherwise.
accounting_or_note() {
	if ! accounting_on; then
		echo "slurm.sh: accounting is off (start --accounting to turn it on): nothing to do for $*" >&2
		return 1
	fi
	((EUID == 0)) || die 3 "sacctmgr changes need root: sudo $0 $*"
}

valid_slurm_name() {
	[[ $2 =~ ^[a-z0-9_][a-z0-9_.-]{0,63}$ ]] || die 1 "$1 '$2' is not a Slurm name ([a-z0-9_.-], at most 64 characters)"
}

ensure_account() {
	(($# == 1)) || die 1 "usage: $0 ensure-account NAME"
	valid_slurm_name account "$1"
	accounting_or_note ensure-account "$1" || return 0
	if [[ -z $(sacctmgr -n -P list account "$1" format=account) ]]; then
		quietly sacctmgr -i add account "$1" Cluster="$CLUSTER" Description="$1" Organization=slicehub ||
			die 1 "sacctmgr add account $1 failed"
	fi
}

ensure_user() {
	(($# == 2)) || die 1 "usage: $0 ensure-user NAME ACCOUNT"
	valid_slurm_name user "$1"
	valid_slurm_name account "$2"
	accounting_or_note ensure-user "$1" "$2" || return 0
	[[ -n $(sacctmgr -n -P list account "$2" format=account) ]] || die 1 "account $2 does not exist: $0 ensure-account $2 first"
	if [[ -z $(sacctmgr -n -P list assoc cluster="$CLUSTER" account="$2" user="$1" format=user) ]]; then
		quietly sacctmgr -i add user "$1" Account="$2" Cluster="$CLUSTER" ||
			die 1 "sacctmgr add user $1 account $2 failed"
	fi
}

command=${1:-start}
(($# > 0)) && shift
case $command in
start)
	for arg in "$@"; do
		case $arg in
		--accounting) ACCOUNTING_FLAG=1 ;;
		--no-accounting) ACCOUNTING_FLAG=0 ;;
		*) die 1 "unknown option for start: $arg" ;;
		esac
	done
	start
	;;
--accounting | --no-accounting)
	ACCOUNTING_FLAG=$([[ $command == --accounting ]] && echo 1 || echo 0)
	start
	;;
stop) stop ;;
status) status ;;
env)
	validate_settings
	USE_CGROUP=$(cgroup_wanted 0)
	if accounting_on; then print_env 1; else print_env 0; fi
	;;
ensure-account) ensure_account "$@" ;;
ensure-user) ensure_user "$@" ;;
*) die 1 "unknown command '$command' (start, stop, status, env, ensure-account, ensure-user)" ;;
esac
