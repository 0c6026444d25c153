"""The deployment files agree with what is tested: the Helm values carry the instance settings of
dagster_home/dagster.yaml, and serve the module the image's command serves (the image's pip install
and gRPC server themselves run in tests/test_package.py)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def image_command() -> list[str]:
    """The Dockerfile's CMD (exec form)."""
    lines = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    assert len(lines) == 1
    return json.loads(lines[0].removeprefix("CMD "))


def test_the_helm_values_carry_the_instance_concurrency_of_the_shipped_dagster_yaml():
    values = yaml.safe_load((DEPLOY / "kubernetes" / "values.yaml").read_text())
    shipped = yaml.safe_load((ROOT / "dagster_home" / "dagster.yaml").read_text())
    assert values["additionalInstanceConfig"]["concurrency"] == shipped["concurrency"]
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == shipped["run_coordinator"]["class"]


def test_the_helm_user_deployment_serves_what_the_image_serves():
    values = yaml.safe_load((DEPLOY / "kubernetes" / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    command = image_command()
    assert command[:3] == ["dagster", "api", "grpc"]
    assert deployment["dagsterApiGrpcArgs"] == command[3:5] == ["--module-name", "balances_etl.definitions"]
    assert str(deployment["port"]) == command[command.index("--port") + 1]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}


def test_the_kubernetes_secret_holds_every_secret_and_the_configmap_none():
    config_map, secret = yaml.safe_load_all((DEPLOY / "kubernetes" / "balances-etl-env.yaml").read_text())
    secrets = {"NOAH_API_KEY", "NOAH_SIGNING_KEY", "AWS_SECRET_ACCESS_KEY", "BALANCES_ETL_ALERT_WEBHOOK_URL"}
    assert secrets <= set(secret["stringData"]) and not secrets & set(config_map["data"])
    assert config_map["data"]["BALANCES_ETL_STORE_URL"].startswith("s3://")
