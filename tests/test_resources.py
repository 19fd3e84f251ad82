"""The Definitions' resources read their environment when a run uses them, not at import.

The Definitions are imported here, at collection, before any test sets ``STAFF_*`` or ``EDUV_*``:
a process that imported them before its environment was set (a code server, a test session) must
still reach the endpoints, warehouse and credentials of the environment each run sees.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, build_resources

from staff_pipeline import warehouse
from staff_pipeline.definitions import defs
from staff_pipeline.standins.edfi import EdFiStandIn
from staff_pipeline.standins.eduv import EduVStandIn
from staff_pipeline.standins.linkit import LinkItStandIn
from tests.fixtures_edfi import LEA_A, SCHOOL_A1, Conformed
from tests.fixtures_eduv import JWT_CLIENT_ID, ORG_ROWS, write_organisations
from tests.fixtures_linkit import assignment, staff_row, write_conformed

PAIR_SECRETS = ("EDUV_CLIENT_ID", "EDFI_CLIENT_ID", "EDFI_CLIENT_SECRET")


def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``STAFF_WAREHOUSE`` away from the data folder; the run must write there."""
    target = tmp_path / "elsewhere" / "warehouse.duckdb"
    monkeypatch.setenv("STAFF_WAREHOUSE", str(target))
    return target


def _run(job: str, **kwargs):
    instance = DagsterInstance.ephemeral()
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False, **kwargs)
    log = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
    return result, log


def test_each_build_of_the_resources_reads_the_environment_of_that_moment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, eduv_private_pem: str
) -> None:
    for name in PAIR_SECRETS:
        monkeypatch.setenv(name, f"{name.lower()}-value")
    monkeypatch.setenv("LINKIT_ACCESS_KEY", "ak-fallback")
    monkeypatch.setenv("LINKIT_PRIVATE_KEY", "pk-fallback")
    for name in ("EDUV_CLIENT_SECRET", "EDUV_PRIVATE_KEY", "STAFF_EDUV_URL", "STAFF_EDFI_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STAFF_LINKIT_URL", "")  # empty counts as unset

    with build_resources(defs.resources) as first:  # nothing set: the stand-ins' standard ports
        assert first.edfi.client_for(LEA_A).base_url == "http://127.0.0.1:8101"
        assert first.linkit.client_for("lakeview").base_url == "http://127.0.0.1:8102"
        with pytest.raises(ValueError, match=r"EDUV_PRIVATE_KEY .*or EDUV_CLIENT_SECRET"):
            first.eduv.client()

    monkeypatch.setenv("STAFF_EDUV_URL", "https://eduv.example:1/")
    monkeypatch.setenv("STAFF_EDFI_URL", "https://edfi.example:2")
    monkeypatch.setenv("STAFF_LINKIT_URL", "https://linkit.example:3")
    monkeypatch.setenv("EDUV_PRIVATE_KEY", eduv_private_pem)
    target = _elsewhere(tmp_path, monkeypatch)
    with build_resources(defs.resources) as second:
        with second.eduv.client() as client:
            assert client.base_url == "https://eduv.example:1"
            assert client.client_id == "eduv_client_id-value"
            assert client.token_url == "https://eduv.example:1/oauth/token"
        assert second.edfi.client_for(LEA_A).base_url == "https://edfi.example:2"
        assert second.linkit.client_for("lakeview").base_url == "https://linkit.example:3"
        with second.warehouse.connect() as con:
            con.execute("CREATE TABLE probe (x INT)")
    assert target.exists()


def test_an_edu_v_run_uses_the_url_key_and_warehouse_set_after_import(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    data_dir: Path,
    eduv_standin: EduVStandIn,
    eduv_private_pem: str,
) -> None:
    write_organisations(tmp_path / "cfg", ORG_ROWS["a-po"], ORG_ROWS["b-po"])
    monkeypatch.setenv("STAFF_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("STAFF_EDUV_URL", eduv_standin.url)
    monkeypatch.setenv("EDUV_CLIENT_ID", JWT_CLIENT_ID)  # a client the stand-in knows only by its key
    monkeypatch.setenv("EDUV_PRIVATE_KEY", eduv_private_pem)
    monkeypatch.delenv("EDUV_CLIENT_SECRET", raising=False)
    target = _elsewhere(tmp_path, monkeypatch)

    result, log = _run("prepare_staff_job", asset_selection=[AssetKey("raw_eduv_employees")])

    assert result.success, log
    assert eduv_standin.requests_to("GET", "/employees")
    assert target.exists() and not (data_dir / "warehouse.duckdb").exists()
    with warehouse.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw_eduv_requests WHERE ok").fetchone()[0] == 2
    assert "PRIVATE KEY" not in log


def test_an_ed_fi_run_uses_the_url_and_warehouse_set_after_import(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path, edfi_env: EdFiStandIn
) -> None:
    # edfi_env has just set STAFF_EDFI_URL and the keys to a stand-in on a random port.
    target = _elsewhere(tmp_path, monkeypatch)
    edfi_env.add_staff(None, "D1")
    world = Conformed().person("d1", "D1").assign("d1", LEA_A, SCHOOL_A1)
    world.email("d1", LEA_A, SCHOOL_A1, "d1@lea1.com").write()

    result, log = _run("edfi_load_job", partition_key=str(LEA_A))

    assert result.success, log
    assert len(edfi_env.requests_to("POST", "/data")) == 2  # one assignment, one contact
    assert target.exists() and not (data_dir / "warehouse.duckdb").exists()
    assert "state-secret" not in log and "secret-a" not in log


def test_a_linkit_run_uses_the_url_and_warehouse_set_after_import(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path, linkit_standin: LinkItStandIn
) -> None:
    # linkit_standin has just set STAFF_LINKIT_URL and the per-district keys.
    monkeypatch.setenv("LINKIT_ACCESS_KEY", "unused-fallback")
    monkeypatch.setenv("LINKIT_PRIVATE_KEY", "unused-fallback")
    target = _elsewhere(tmp_path, monkeypatch)
    write_conformed([staff_row("p1", "L1")], [assignment("p1")])

    result, log = _run("linkit_load_job", partition_key="lakeview")

    assert result.success, log
    assert [user["LocalCode"] for user in linkit_standin.users("lakeview")] == ["L1"]
    assert target.exists() and not (data_dir / "warehouse.duckdb").exists()


def test_keys_per_lea_and_district_alone_are_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    """WISEdata issues one key per LEA: no shared fallback pair has to be invented, and a target
    without a key of its own fails naming the variables to set."""
    for name in ("EDFI_CLIENT_ID", "EDFI_CLIENT_SECRET", "LINKIT_ACCESS_KEY", "LINKIT_PRIVATE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EDUV_CLIENT_ID", "eduv")
    monkeypatch.setenv(f"EDFI_CLIENT_ID_{LEA_A}", "lea-a")
    monkeypatch.setenv(f"EDFI_CLIENT_SECRET_{LEA_A}", "secret-a")
    monkeypatch.setenv("LINKIT_ACCESS_KEY_LAKEVIEW", "ak-lakeview")
    monkeypatch.setenv("LINKIT_PRIVATE_KEY_LAKEVIEW", "pk-lakeview")
    with build_resources(defs.resources) as built:
        assert built.edfi.keys_for(LEA_A) == ("lea-a", "secret-a")
        assert built.linkit.keys_for("lakeview") == ("ak-lakeview", "pk-lakeview")
        with pytest.raises(ValueError, match=r"EDFI_CLIENT_ID_100002 and EDFI_CLIENT_SECRET_100002"):
            built.edfi.client_for(100002)
        with pytest.raises(ValueError, match=r"LINKIT_ACCESS_KEY_RIVERSIDE and LINKIT_PRIVATE_KEY_RIVERSIDE"):
            built.linkit.client_for("riverside")
    monkeypatch.setenv("EDFI_CLIENT_ID", "state")
    monkeypatch.setenv("EDFI_CLIENT_SECRET", "state-secret")
    with build_resources(defs.resources) as built:  # the fallback pair, read when the run builds a client
        assert built.edfi.keys_for(100002) == ("state", "state-secret")
        assert built.edfi.keys_for(LEA_A) == ("lea-a", "secret-a")
    # Half an LEA's pair is an error, never completed with the fallback's secret.
    monkeypatch.setenv("EDFI_CLIENT_ID_100002", "lea-b")
    half = r"half a key pair .*EDFI_CLIENT_SECRET_100002 is not set"
    with build_resources(defs.resources) as built, pytest.raises(ValueError, match=half):
        built.edfi.keys_for(100002)


@pytest.mark.parametrize(
    "url", ["http://eduv.example", "http://10.0.0.5:8080", "ftp://127.0.0.1", "eduv.example"]
)
def test_a_client_refuses_plain_http_to_another_machine(url: str) -> None:
    """Secrets and tokens go with every request: only TLS, or loopback (the local stand-ins)."""
    from staff_pipeline.clients.edfi import EdFiClient
    from staff_pipeline.clients.eduv import EduVClient
    from staff_pipeline.clients.linkit import LinkItClient

    for make in (
        lambda: EduVClient(url, "id", client_secret="s"),
        lambda: EduVClient("https://eduv.example", "id", client_secret="s", token_url=url),
        lambda: EdFiClient(url, "id", "s"),
        lambda: LinkItClient(url, "access", "private"),
    ):
        with pytest.raises(ValueError, match="must be https://"):
            make()
    for allowed in ("https://api.example", "http://127.0.0.1:8101", "http://localhost:1"):
        EdFiClient(allowed, "id", "s").close()
