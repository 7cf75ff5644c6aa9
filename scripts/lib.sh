# Shell helpers shared by the project's service scripts (postgres.sh, slurm.sh). Sourced, not run.
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
