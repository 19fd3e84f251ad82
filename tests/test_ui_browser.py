"""The Dagster UI as a person uses it: the webserver, a run launched through GraphQL, the asset graph
rendered in headless Chromium with every asset of the Definitions on the page.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from staff_pipeline.generator import generate
from staff_pipeline.settings import REPO_ROOT, paths
from staff_pipeline.standins.local import LocalApis, local_apis
from staff_pipeline.warehouse import connect, row_count

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
LOCATION = "staff_pipeline"

LAUNCH = """
mutation Launch($job: String!, $location: String!) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: $location, repositoryName: "__repository__", jobName: $job}
    runConfigData: "{}"
  }) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def apis(tmp_path: Path) -> Iterator[LocalApis]:
    """A small generated roster: SIS exports in the inbox, Edu-V schools served by the stand-in."""
    generated = generate(tmp_path / "generated", 60, seed=3, bad_share=0.0)
    shutil.copytree(generated.inbox_dir, paths().inbox, dirs_exist_ok=True)
    with local_apis(generated.eduv_dir) as started:
        yield started


@pytest.fixture
def dagster_dev(tmp_path: Path, apis: LocalApis) -> Iterator[str]:
    """The Dagster webserver on a free loopback port, its runs pointed at the stand-ins.

    The webserver alone (no daemon): the launched run starts at once, and the sensors, which are
    on by default, do not start a night of follow-up runs on a 2-core CI machine mid-test.
    """
    home = Path(os.environ["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    port = _free_port()
    log = (tmp_path / "dagster_webserver.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            "-w",
            str(REPO_ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, **apis.env, "STAFF_WAREHOUSE_WAIT": "300"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if requests.get(f"{url}/server_info", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (tmp_path / "dagster_webserver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the webserver did not come up in 240 s"
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the session this test started: webserver and its runs
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _graphql(url: str, query: str, variables: dict) -> dict:
    response = requests.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _chromium(profile: Path, *args: str) -> subprocess.Popen:
    """Headless Chromium on one page; each call gets its own profile so several can run at once."""
    return subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--window-size=1800,1100",
            "--virtual-time-budget=60000",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(browser: subprocess.Popen) -> str:
    out, err = browser.communicate(timeout=300)
    assert browser.returncode == 0, err[-2000:]
    return out


def test_launch_a_run_and_see_the_asset_graph(dagster_dev: str, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("Chromium not found: apt-get install chromium (.ci/run installs it)")
    from staff_pipeline.definitions import defs

    deadline = time.monotonic() + 240
    while True:  # the webserver answers before the code location has finished loading
        launched = _graphql(dagster_dev, LAUNCH, {"job": "prepare_staff_job", "location": LOCATION})
        launched = launched["launchRun"]
        if launched["__typename"] != "PipelineNotFoundError" or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    deadline, status = time.monotonic() + 300, None
    while time.monotonic() < deadline:
        status = _graphql(dagster_dev, STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    assert status == "SUCCESS"
    with connect() as con:  # the run really extracted, gated and conformed the roster
        assert row_count(con, "raw_eduv_employees") > 0 and row_count(con, "staff") > 0

    # Each stage group's page draws its assets as nodes (the global lineage shows groups collapsed).
    groups: dict[str, list[str]] = {}
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, []).append(key.to_user_string())
    assert {"extract", "staging", "conformed"} <= set(groups)
    screenshot = tmp_path / "asset-graph.png"
    shot = _chromium(
        tmp_path / "profile-shot",
        f"--screenshot={screenshot}",
        f"{dagster_dev}/locations/{LOCATION}/asset-groups/conformed",
    )
    pages = {
        group: _chromium(
            tmp_path / f"profile-{group}",
            "--dump-dom",
            f"{dagster_dev}/locations/{LOCATION}/asset-groups/{group}",
        )
        for group in groups
    }
    try:
        for group, browser in pages.items():
            dom = _finish(browser)
            missing = [name for name in groups[group] if name not in dom]
            assert not missing, f"not on the {group} asset graph: {missing}"
        _finish(shot)
    finally:
        for browser in [shot, *pages.values()]:
            if browser.poll() is None:
                browser.kill()
                browser.wait(timeout=10)
    assert screenshot.stat().st_size > 10_000
