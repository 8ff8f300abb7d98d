"""Every prefect.yaml entrypoint imports and names a flow; every deployment's parameters fit it."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_entrypoint_imports_a_flow():
    from prefect import Flow

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    seen = set()
    for dep in config["deployments"]:
        path, func = dep["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        assert isinstance(flow, Flow), dep["entrypoint"]
        accepted = set(inspect.signature(flow.fn).parameters)
        unknown = set(dep.get("parameters", {})) - accepted
        assert not unknown, f"{dep['entrypoint']} ({dep['name']}) gets unknown parameters {unknown}"
        seen.add((flow.name, dep["name"]))
    assert {
        ("release", "staging"),
        ("release", "production"),
        ("rollback", "production"),
        ("migrate", "staging"),
        ("migrate", "production"),
        ("backup", "production"),
        ("restore", "production"),
    } <= seen
