# Shell helpers shared by the project's service scripts (postgres.sh, slurm.sh, ldap.sh, chromium.sh). Sourced, not run.
# The sourcing script sets SCRIPT to its own name first, for the messages.

die() {
	local status=$1
	shift
	echo "${SCRIPT}: $*" >&2
	exit "$status"
}

# Runs a command with its output kept aside; shows that output only if the command fails.
quietly() {
	local log status=0
	log=$(mktemp)
	"$@" >"$log" 2>&1 || status=$?
	if ((status != 0)); then
		echo "${SCRIPT}: failed ($status): $*" >&2
		cat "$log" >&2
	fi
	rm -f "$log"
	return "$status"
}

# The last lines of a daemon's log, indented, for a failure message.
log_tail() {
	[[ -r $1 ]] && tail -n 15 "$1" | sed 's/^/    /'
	return 0
}

# The pid in `pidfile` if that process lives and is `comm`; fails otherwise.
live_pid() {
	local pidfile=$1 comm=$2 pid
	[[ -r $pidfile ]] || return 1
	pid=$(<"$pidfile")
	# /proc, not kill -0: a warm check by another user may not signal another user's daemon.
	[[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
	echo "$pid"
}

# Stops the `comm` process named in `pidfile`: TERM, then KILL after STOP_TIMEOUT_S (set by
# the sourcing script); removes the pid file.
stop_daemon() {
	local pidfile=$1 comm=$2 pid deadline
	pid=$(live_pid "$pidfile" "$comm") || {
		rm -f "$pidfile"
		return 0
	}
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + STOP_TIMEOUT_S))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
	rm -f "$pidfile"
}

# Debian packages that are not installed yet, with apt-get (root).
install_packages() {
	local packages=("$@") missing=() p candidate
	for p in "${packages[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	command -v apt-get >/dev/null 2>&1 || die 3 "${missing[*]} not installed and there is no apt-get"
	export DEBIAN_FRONTEND=noninteractive
	candidate=$(apt-cache policy "${missing[0]}" 2>/dev/null | awk '/Candidate:/ {print $2}')
	if [[ -z $candidate || $candidate == "(none)" ]]; then
		quietly apt-get update -qq || die 3 "apt-get update failed"
	fi
	# Lists older than the mirror name files that are gone: update once, then try again.
	# 9>&- : a service that a package's postinst starts must not inherit the lock.
	if ! quietly apt-get install -y -qq --no-install-recommends "${missing[@]}" 9>&-; then
		quietly apt-get update -qq || die 3 "apt-get update failed"
		quietly apt-get install -y -qq --no-install-recommends "${missing[@]}" 9>&- ||
			die 3 "apt-get install ${missing[*]} failed"
	fi
}
