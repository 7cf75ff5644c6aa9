"""slicehub/spawners/slurm/job.py: the job a validated request becomes, and a batch script that no
value can break out of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jinja2
import pytest
from batchspawner import SlurmSpawner

from slicehub.spawners.options import OptionsError, validate_options
from slicehub.spawners.slurm import job as sj

from .test_slurm_site import site_with

SITE = site_with()
NOW = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
VENV = "/opt/slicehub/venv/bin"


def spec(slice_type="h100.1g.10gb", project="ai-lab", minutes=120, site=SITE, **kw):
    options = validate_options({"slice_type": slice_type, "duration_hours": minutes / 60}, site)
    values = {
        "project": project,
        "session_end": NOW + timedelta(minutes=minutes, seconds=-0.4),
        "now": NOW,
        "home": "/home/alice",
        "username": "alice",
        "ledger_session": 812,
    }
    values.update(kw)
    return sj.job_spec(options, site.slurm, **values)


def test_a_request_becomes_exactly_this_sbatch_line():
    assert sj.sbatch_argv(spec(), "/usr/bin/sbatch") == [
        "/usr/bin/sbatch",
        "--parsable",
        "--job-name=slicehub-812-alice",
        "--partition=gpu",
        "--account=ai_lab",
        "--gres=gpu:nvidia_h100_80gb_hbm3_1g.10gb:1",
        "--cpus-per-task=2",
        "--mem=16384M",
        "--time=119",  # what the hold pays for, rounded down
        "--output=/home/alice/.slicehub/slurm-%j.log",
        "--chdir=/home/alice",
        "--no-requeue",
    ]


def test_whole_gpus_cpu_slices_and_accounts():
    two = spec("h100x2", project="vision")
    assert (two.gres, two.partition, two.account) == ((("h100", 2),), "gpu-whole", "vision")
    cpu = spec("cpu")
    assert cpu.cpu_only and cpu.partition == "cpu"
    assert not any(a.startswith("--gres") for a in sj.sbatch_argv(cpu))
    assert spec(project=None).account is None  # no ledger: Slurm's default account
    with pytest.raises(sj.JobRefused, match="Project unmapped has no Slurm account"):
        spec(project="unmapped")
    assert spec(project="unmapped", site=site_with((("slurm", "default_account"), "centre")))
    assert spec().describe() == (
        "gpu:nvidia_h100_80gb_hbm3_1g.10gb:1 in partition gpu, account ai_lab"
    )


@pytest.mark.parametrize(
    "left, minutes",
    [
        (timedelta(hours=2), 120),
        (timedelta(minutes=59, seconds=59), 59),
        (timedelta(seconds=30), 1),
        (timedelta(minutes=-5), 1),
    ],
)
def test_time_limit_is_rounded_down_and_at_least_a_minute(left, minutes):
    assert sj.time_limit_minutes(NOW + left, NOW) == minutes


@pytest.mark.parametrize(
    "user, name",
    [
        ("alice", "slicehub-7-alice"),
        ("a.b@uni.edu", "slicehub-7-a.b_uni.edu"),
        ("x\n#SBATCH --gres=gpu:8", "slicehub-7-x_SBATCH_--gres_gpu_8"),
        ("$(id)", "slicehub-7-id"),
        ("ünï", "slicehub-7-n"),
        ("ü", "slicehub-7-user"),
    ],
)
def test_job_names_carry_the_session_and_only_safe_characters(user, name):
    assert sj.job_name(7, user) == name
    assert sj.session_of_job(name) == (7, name.split("-", 2)[2])
    spec(username=user)  # accepted by sbatch_argv's own checks


def test_job_names_of_other_jobs_are_not_sessions():
    for name in ("slicehub-test", "slicehub-alice", "nb-12", "allocation", "slicehub-12x"):
        assert sj.session_of_job(name) is None
    assert sj.session_of_job("slicehub-12") == (12, "")


def render(command, cpu_only=False, template=None):
    return sj.render_script(
        template or sj.script_template(),
        slice_type="h100.1g.10gb",
        ledger_session=812,
        cpu_only=cpu_only,
        command=command,
    )


def test_the_script_quotes_every_value_and_has_no_sbatch_lines():
    script = render([f"{VENV}/jupyterhub-singleuser", "--notebook-dir=~/a b"])
    assert script.startswith("#!/bin/bash\n# Slicehub notebook server: a h100.1g.10gb slice")
    assert "#SBATCH" not in script
    assert script.rstrip().endswith(f"exec {VENV}/jupyterhub-singleuser '--notebook-dir=~/a b'")
    assert "CUDA_VISIBLE_DEVICES" not in script  # Slurm sets it for the job's GRES
    assert "export CUDA_VISIBLE_DEVICES=\n" in render(["x"], cpu_only=True)


@pytest.mark.parametrize(
    "word, quoted",
    [
        ("$(touch /tmp/pwned)", "'$(touch /tmp/pwned)'"),
        ("`id`", "'`id`'"),
        ("a'b", "'a'\"'\"'b'"),
        ("; rm -rf ~", "'; rm -rf ~'"),
    ],
)
def test_shell_metacharacters_stay_inside_one_quoted_word(word, quoted):
    assert render(["cmd", word]).rstrip().endswith(f"exec cmd {quoted}")


@pytest.mark.parametrize("word", ["a\n#SBATCH --gres=gpu:h100:8", "a\rb", "a\0b", "tab\tx"])
def test_control_characters_are_refused_before_anything_is_submitted(word):
    with pytest.raises(sj.JobRefused, match="control character"):
        render(["cmd", word])


def test_an_admins_template_gets_the_same_rules(tmp_path):
    good = tmp_path / "job.sh.j2"
    good.write_text("#!/bin/bash\nmodule load cuda  # {{ slice_type }}\nexec {{ command }}\n")
    out = render(["cmd", "a b"], template=sj.script_template(str(good)))
    assert out == "#!/bin/bash\nmodule load cuda  # h100.1g.10gb\nexec cmd 'a b'\n"
    greedy = tmp_path / "greedy.sh.j2"
    greedy.write_text("#SBATCH --gres={{ gres }}\nexec {{ command }}\n")
    with pytest.raises(jinja2.UndefinedError):  # only the four documented values exist
        render(["cmd"], template=sj.script_template(str(greedy)))
    raw = tmp_path / "raw.sh.j2"
    raw.write_text("exec {{ command | join(' ') }}\n")  # trying to get around the quoting
    assert render(["cmd", "$(id)"], template=sj.script_template(str(raw))) == "exec 'cmd $(id)'\n"


def test_the_job_environment_takes_only_what_slurm_needs_from_the_hub():
    hub = {"PATH": "/usr/bin", "SLURM_CONF": "/etc/slurm.conf", "SLICEHUB_QUOTA_TOKEN": "secret"}
    server = {"JUPYTERHUB_API_TOKEN": "t", "SLICEHUB_SLICE_TYPE": "cpu"}
    assert sj.submit_env(hub, server) == {
        "PATH": "/usr/bin",
        "SLURM_CONF": "/etc/slurm.conf",
        "JUPYTERHUB_API_TOKEN": "t",
        "SLICEHUB_SLICE_TYPE": "cpu",
    }


BATCH_VARIABLES = sorted(
    {t for t in SlurmSpawner.class_trait_names() if t.startswith("req_")}
    | {t[4:] for t in SlurmSpawner.class_trait_names() if t.startswith("req_")}
    | {"cmd", "keepvars", "batch_script", "job_id", "port", "ip", "exec_prefix"}
)


@pytest.mark.parametrize("name", BATCH_VARIABLES)
def test_every_batchspawner_template_variable_is_refused_as_an_option(name):
    with pytest.raises(OptionsError, match="Unknown option"):
        validate_options({"slice_type": "cpu", name: "x"}, SITE)
