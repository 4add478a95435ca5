"""Hydra's own sweeper/launcher suites with hydra/sweeper=mfcl, over Hydra's BasicLauncher."""
import pytest
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)


@pytest.mark.parametrize("launcher_name, overrides", [("basic", ["hydra/sweeper=mfcl"])])
class TestMfclSweeperWithBasicLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "launcher_name, overrides",
    [("basic", ["hydra/sweeper=mfcl", "hydra.sweeper.max_batch_size=2"]),
     ("mfcl_local", ["hydra/sweeper=mfcl", "hydra.sweeper.max_batch_size=2"])],
)
class TestMfclSweeperBatches(BatchedSweeperTestSuite):
    pass


@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/sweeper=mfcl"])])
class TestMfclSweeperIntegration(IntegrationTestSuite):
    pass
