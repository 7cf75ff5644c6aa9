"""slicehub/spawners/slurm/commands.py and answers.py: argv that no value can turn into something
else, and parsers checked on output recorded from a real Slurm (tests/fixtures/slurm/README.md
says how)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from slicehub.spawners.slurm import answers as sa
from slicehub.spawners.slurm import commands as sc

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def sbatch(**overrides: object) -> list[str]:
    values: dict[str, object] = {
        "job_name": "slicehub-alice",
        "partition": "gpu",
        "account": "ai-lab",
        "gres": [("1g.10gb", 1)],
        "cpus": 2,
        "mem_mb": 8000,
        "time_minutes": 120,
        "output": "/home/alice/.slicehub/slurm-%j.out",
        "chdir": "/home/alice",
    }
    values.update(overrides)
    return sc.sbatch_argv(**values)  # type: ignore[arg-type]


# ---- sbatch ----------------------------------------------------------------------------------


def test_sbatch_argv_names_every_value_as_one_option() -> None:
    assert sbatch() == [
        "sbatch",
        "--parsable",
        "--job-name=slicehub-alice",
        "--partition=gpu",
        "--account=ai-lab",
        "--gres=gpu:1g.10gb:1",
        "--cpus-per-task=2",
        "--mem=8000M",
        "--time=120",
        "--output=/home/alice/.slicehub/slurm-%j.out",
        "--chdir=/home/alice",
        "--no-requeue",
    ]


def test_sbatch_argv_without_account_or_gres_and_with_requeue() -> None:
    argv = sbatch(account=None, gres=[], requeue=True, executable="/usr/bin/sbatch")
    assert argv[0] == "/usr/bin/sbatch"
    assert not any(a.startswith(("--account", "--gres")) for a in argv)
    assert argv[-1] == "--requeue"


def test_sbatch_argv_joins_several_slice_types() -> None:
    argv = sbatch(gres=[("1g.10gb", 2), ("3g.40gb", 1)])
    assert "--gres=gpu:1g.10gb:2,gpu:3g.40gb:1" in argv
    # Slicehub's own names work as GRES types too (tried on the test cluster).
    assert "--gres=gpu:h100.1g.10gb:1" in sbatch(gres=[("h100.1g.10gb", 1)])


HOSTILE_TEXT = [
    "a\nb",
    "name\n#SBATCH --partition=admin",
    "#SBATCH",
    "two words",
    "a;id",
    "$(id)",
    "`id`",
    "a|b",
    "a,b",
    "a=b",
    "-x",
    "--partition=admin",
    "ünïcode",
    "",
    "x" * 65,
    "trailing\n",
    "tab\there",
    "nul\0",
]


@pytest.mark.parametrize("value", HOSTILE_TEXT)
@pytest.mark.parametrize(
    ("field", "message"),
    [("job_name", "job name"), ("partition", "partition"), ("account", "account")],
)
def test_sbatch_argv_refuses_hostile_names(field: str, message: str, value: str) -> None:
    with pytest.raises(ValueError, match=rf"^{message} "):
        sbatch(**{field: value})


@pytest.mark.parametrize("value", ["AI-LAB", ".hidden", 7, None])
def test_sbatch_argv_refuses_accounts_slurm_would_not_have(value: object) -> None:
    if value is None:
        assert "--account" not in " ".join(sbatch(account=None))
        return
    with pytest.raises(ValueError, match=r"^account "):
        sbatch(account=value)


@pytest.mark.parametrize(
    "gres",
    [
        [("1g.10gb\n#SBATCH --x", 1)],
        [("1g:10gb", 1)],
        [("1g,gpu:h100", 1)],
        [("", 1)],
        [("x" * 33, 1)],
        [(" 1g.10gb", 1)],
        [("H100", 1)],  # sacct would report it as gres/gpu:h100
    ],
)
def test_sbatch_argv_refuses_hostile_slice_types(gres: list[tuple[str, int]]) -> None:
    with pytest.raises(ValueError, match=r"^slice type "):
        sbatch(gres=gres)


@pytest.mark.parametrize("count", [0, -1, 65, True, 1.0, "1", None])
def test_sbatch_argv_refuses_slice_counts_out_of_range(count: object) -> None:
    with pytest.raises(ValueError, match=r"^count of slice type 1g\.10gb "):
        sbatch(gres=[("1g.10gb", count)])


def test_sbatch_argv_refuses_a_slice_type_twice_and_malformed_entries() -> None:
    with pytest.raises(ValueError, match="given twice"):
        sbatch(gres=[("1g.10gb", 1), ("1g.10gb", 1)])
    with pytest.raises(ValueError, match=r"^gres entry "):
        sbatch(gres=["gpu:1g.10gb:1"])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cpus", 0, "cpus"),
        ("cpus", -2, "cpus"),
        ("cpus", 257, "cpus"),
        ("cpus", True, "cpus"),
        ("cpus", "2", "cpus"),
        ("mem_mb", 0, "memory"),
        ("mem_mb", -1, "memory"),
        ("mem_mb", 8000.5, "memory"),
        ("time_minutes", 0, "time limit"),
        ("time_minutes", -60, "time limit"),
        ("time_minutes", 10**7, "time limit"),
    ],
)
def test_sbatch_argv_refuses_numbers_out_of_range(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^{message} .* whole number from"):
        sbatch(**{field: value})


@pytest.mark.parametrize(
    "path",
    [
        "relative/slurm.out",
        "/tmp/two words.out",
        "/tmp/../etc/passwd",
        "/tmp/./x",
        "/tmp//x",
        "/tmp/x\n#SBATCH --partition=admin",
        "/tmp/x;id",
        "/tmp/$(id)",
        "/tmp/%Z",
        "/tmp/" + "a" * 1100,
        "/",
        "",
    ],
)
@pytest.mark.parametrize(("field", "message"), [("output", "output path"), ("chdir", "working")])
def test_sbatch_argv_refuses_hostile_paths(field: str, message: str, path: str) -> None:
    with pytest.raises(ValueError, match=rf"^{message} .* absolute path"):
        sbatch(**{field: path})


def test_sbatch_argv_allows_sbatch_patterns_in_output_only() -> None:
    assert "--output=/scratch/u/%u/%x-%j.out" in sbatch(output="/scratch/u/%u/%x-%j.out")
    with pytest.raises(ValueError, match=r"^working directory "):
        sbatch(chdir="/scratch/%u")


@pytest.mark.parametrize(
    "executable", ["sbatch; id", "../sbatch", "bin/sbatch", "/usr/bin/s batch"]
)
def test_sbatch_argv_refuses_odd_executables(executable: str) -> None:
    with pytest.raises(ValueError, match=r"^executable "):
        sbatch(executable=executable)


def test_parse_sbatch_reads_the_recorded_job_id() -> None:
    assert sa.parse_sbatch(fixture("sbatch-parsable.txt")) == "10"


@pytest.mark.parametrize(
    ("stdout", "job_id"),
    [("123\n", "123"), ("123;gpucluster\n", "123"), ("sbatch: warning: x\n42\n", "42")],
)
def test_parse_sbatch_takes_the_id_from_the_last_line(stdout: str, job_id: str) -> None:
    assert sa.parse_sbatch(stdout) == job_id


@pytest.mark.parametrize("stdout", ["", "\n", "Submitted batch job 5\n", "12a\n", "0\n"])
def test_parse_sbatch_refuses_output_without_an_id(stdout: str) -> None:
    with pytest.raises(ValueError, match="no job id"):
        sa.parse_sbatch(stdout)


# ---- squeue / scancel ------------------------------------------------------------------------


def test_squeue_argv_for_jobs_asks_for_every_state() -> None:
    assert sc.squeue_argv(["12", 13]) == [
        "squeue",
        "--noheader",
        "--format=%i|%T|%r|%P|%a|%u|%b|%N|%S|%V|%Q|%j",
        "--jobs=12,13",
        "--states=all",
    ]
    assert sc.squeue_argv(pending_only=True, partition="gpu")[-2:] == [
        "--states=PENDING",
        "--partition=gpu",
    ]


@pytest.mark.parametrize("job_id", ["0", "-1", "1,2", "12 ", "abc", "1\n", True, 1.5, ""])
def test_job_ids_must_be_plain_positive_numbers(job_id: object) -> None:
    with pytest.raises(ValueError, match=r"^job id "):
        sc.squeue_argv([job_id])
    with pytest.raises(ValueError, match=r"^job id "):
        sc.scancel_argv(job_id)


def test_squeue_argv_needs_at_least_one_job_id_when_given_ids() -> None:
    with pytest.raises(ValueError, match="at least one"):
        sc.squeue_argv([])


def test_scancel_argv() -> None:
    assert sc.scancel_argv(42) == ["scancel", "42"]


def test_parse_squeue_reads_finished_running_and_waiting_jobs() -> None:
    jobs = {j.job_id: j for j in sa.parse_squeue(fixture("squeue-jobs.txt"))}

    assert set(jobs) == {"10", "11", "13", "15"}
    done, running, waiting, cancelled = jobs["10"], jobs["11"], jobs["13"], jobs["15"]
    assert (done.state, done.finished, done.nodes) == ("COMPLETED", True, "vm")
    assert running.state == "RUNNING" and running.reason is None and not running.finished
    assert running.gres == {"h100": 1}
    assert running.start == datetime(2026, 11, 22, 15, 15, 58)
    assert (running.account, running.user, running.partition) == ("ai-lab", "root", "gpu")
    assert running.name == "nb-h100-1"
    assert waiting.pending and waiting.reason == "Resources"
    assert waiting.nodes is None and waiting.start is None  # no estimate without a reservation
    assert waiting.priority == 4294901747
    assert (cancelled.state, cancelled.finished, cancelled.nodes) == ("CANCELLED", True, None)


def test_parse_squeue_reads_a_failed_job_and_a_job_with_two_slice_types() -> None:
    (failed,) = sa.parse_squeue(fixture("squeue-failed.txt"))
    assert (failed.state, failed.reason, failed.finished) == ("FAILED", "NonZeroExitCode", True)
    mixed = next(j for j in sa.parse_squeue(fixture("squeue-queue.txt")) if j.name == "nb-mixed")
    assert mixed.gres == {"1g.10gb": 1, "3g.40gb": 1}


def test_parse_squeue_keeps_a_delimiter_inside_the_job_name() -> None:
    line = "7|PENDING|Priority|gpu|(null)|bob|N/A||N/A|2026-11-22T15:15:58|100|odd|name\n"
    (job,) = sa.parse_squeue(line)
    assert job.name == "odd|name"
    assert job.account is None and job.gres == {} and job.reason == "Priority"


def test_parse_squeue_refuses_a_line_of_another_format() -> None:
    with pytest.raises(ValueError, match="fields"):
        sa.parse_squeue("12 R alice\n")


def test_queue_positions_count_only_jobs_waiting_for_the_same_slices() -> None:
    positions = sa.queue_positions(sa.parse_squeue(fixture("squeue-queue.txt")))

    # 13 and 14 wait for h100; 21 before 20 (20 was submitted with --nice=100); 24 alone.
    assert positions == {"13": 1, "14": 2, "21": 1, "20": 2, "24": 1}
    assert sa.queue_positions(sa.parse_squeue(fixture("squeue-pending.txt"))) == positions


def test_squeue_unknown_job_recognises_the_recorded_error() -> None:
    assert sa.squeue_unknown_job(fixture("squeue-unknown-job.stderr.txt"))
    assert not sa.squeue_unknown_job("squeue: error: Unable to contact slurm controller")


# ---- sinfo -----------------------------------------------------------------------------------


def test_sinfo_gres_argv() -> None:
    assert sc.sinfo_gres_argv(executable="/usr/bin/sinfo") == [
        "/usr/bin/sinfo",
        "--noheader",
        "--Node",
        "--Format=NodeList:|,StateLong:|,Gres:|,GresUsed:",
    ]
    assert sc.sinfo_gres_argv("gpu")[-1] == "--partition=gpu"


def test_parse_sinfo_gres_counts_each_node_once() -> None:
    assert sa.parse_sinfo_gres(fixture("sinfo-gres.txt")) == {
        "1g.10gb": sa.GresAvailability(total=40, used=3, free=37),
        "3g.40gb": sa.GresAvailability(total=4, used=4, free=0),
        "h100": sa.GresAvailability(total=2, used=2, free=0),
    }


def test_parse_sinfo_gres_offers_nothing_on_a_draining_node() -> None:
    counts = sa.parse_sinfo_gres(fixture("sinfo-gres-draining.txt"))
    assert counts["1g.10gb"] == sa.GresAvailability(total=40, used=3, free=0)


def test_parse_sinfo_gres_reads_index_lists_and_skips_untyped_gres() -> None:
    stdout = (
        "gpu01|mixed|gpu:h100:4(S:0-1),gpu:2|gpu:h100:2(IDX:0,3),gpu:0\n"
        "gpu02|idle*|gpu:h100:4(S:0-1)|gpu:h100:0(IDX:N/A)\n"
        "gpu03|idle|(null)|(null)\n"
    )
    assert sa.parse_sinfo_gres(stdout) == {"h100": sa.GresAvailability(total=8, used=2, free=2)}


# ---- sacct -----------------------------------------------------------------------------------


def test_sacct_argv_by_jobs_and_by_time_window() -> None:
    fields = (
        "--format=JobID,State,Partition,Account,User,Submit,Start,End,ElapsedRaw,AllocTRES,"
        "ExitCode,JobName"
    )
    assert sc.sacct_argv([10, "11"]) == [
        "sacct",
        "--noheader",
        "--parsable2",
        "--allocations",
        fields,
        "--jobs=10,11",
    ]
    assert sc.sacct_argv(since=datetime(2026, 11, 1), until=datetime(2026, 12, 1, 8, 30))[-3:] == [
        "--allusers",
        "--starttime=2026-11-01T00:00:00",
        "--endtime=2026-12-01T08:30:00",
    ]


def test_sacct_argv_refuses_ambiguous_requests() -> None:
    with pytest.raises(ValueError, match="either job ids or a start time"):
        sc.sacct_argv()
    with pytest.raises(ValueError, match="either job ids or a start time"):
        sc.sacct_argv([1], since=datetime(2026, 11, 1))
    with pytest.raises(ValueError, match="until goes with since"):
        sc.sacct_argv([1], until=datetime(2026, 11, 1))
    with pytest.raises(ValueError, match=r"^since .* naive datetime"):
        sc.sacct_argv(since=datetime(2026, 11, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match=r"^since "):
        sc.sacct_argv(since="2026-11-01")  # type: ignore[arg-type]


def test_parse_sacct_reads_slices_times_and_states() -> None:
    jobs = {j.job_id: j for j in sa.parse_sacct(fixture("sacct-jobs.txt"))}

    done = jobs["10"]
    assert (done.state, done.account, done.user, done.partition) == (
        "COMPLETED",
        "ai-lab",
        "root",
        "gpu",
    )
    assert done.gres == {"1g.10gb": 1}
    assert (done.start, done.end, done.elapsed_s) == (
        datetime(2026, 11, 22, 15, 15, 54),
        datetime(2026, 11, 22, 15, 15, 55),
        1,
    )
    assert done.exit_code == "0:0" and done.name == "nb-done"
    assert jobs["11"].state == "RUNNING" and jobs["11"].end is None
    assert jobs["11"].gres == {"h100": 1}
    assert jobs["13"].state == "PENDING" and jobs["13"].start is None and jobs["13"].gres == {}
    assert jobs["15"].state == "CANCELLED"  # "CANCELLED by 0"
    assert jobs["15"].gres == {} and jobs["15"].elapsed_s == 0


def test_parse_sacct_reads_a_time_window_with_several_slice_types() -> None:
    jobs = {j.job_id: j for j in sa.parse_sacct(fixture("sacct-window.txt"))}
    assert len(jobs) == 24
    assert jobs["9"].gres == {"1g.10gb": 1, "3g.40gb": 1}
    assert jobs["23"].gres == {"1g.10gb": 2}
    assert jobs["3"].start is None  # cancelled while pending: "None"


def test_parse_sacct_shows_what_slurmdbd_knows_just_after_a_start() -> None:
    (job,) = sa.parse_sacct(fixture("sacct-just-started.txt"))
    # slurmdbd lags slurmctld: a running job reads PENDING, without partition or slices.
    assert (job.state, job.partition, job.gres, job.name) == ("PENDING", "", {}, "allocation")


def test_parse_sacct_reads_a_failed_job() -> None:
    (job,) = sa.parse_sacct(fixture("sacct-failed.txt"))
    assert (job.state, job.exit_code, job.gres) == ("FAILED", "3:0", {"1g.10gb": 1})


def test_parse_sacct_refuses_a_line_of_another_format() -> None:
    with pytest.raises(ValueError, match="fields"):
        sa.parse_sacct("10|COMPLETED\n")
