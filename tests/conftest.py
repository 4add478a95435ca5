"""Every test starts from Hydra's pristine global state: an in-process `initialize(version_base=...)`
in one test must not change, e.g., the job working-dir behaviour Hydra's suites expect later."""
import pytest


@pytest.fixture(autouse=True)
def _restore_hydra_singletons(hydra_restore_singletons: None) -> None:
    """Hydra's own fixture snapshots and restores its singletons around each test."""
