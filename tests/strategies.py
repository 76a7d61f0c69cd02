"""Hypothesis strategies and settings profiles shared by the property and fuzz tests.

``scenario_dicts()`` draws random but *valid* scenarios as plain dicts (what a TOML file holds):
DAGs of 1-8 columns built from generators (multi-output ones included), local, model and
custom-model columns, several columns on one model alias, several domains on one provider/model,
row-group plans with partial last groups and 1-row groups, every 429 pattern, all three policies
and scheduler limits down to 1. ``hostile_scenario_dicts()`` pushes such scenarios into the regimes
that used to run away (zero latencies, always-429 with a tiny backoff, thousands of row groups,
short horizons, no cooldown), with a small run budget. Sizes are kept small on purpose: a property test runs hundreds of
whole simulations, and the interesting cases (stalls, leaks, wrong blocks) show up in tiny
scenarios at least as often as in big ones.

Profiles (``ADMISSION_SIM_HYPOTHESIS_PROFILE``):

* ``ci`` (default): derandomized, no example database, no deadline: the same examples on every
  machine, so CI is deterministic and fast;
* ``thorough``: ten times the examples, randomized (a fresh seed each run), still no database.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

PROFILE_ENV = "ADMISSION_SIM_HYPOTHESIS_PROFILE"

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    derandomize=False,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Example counts are multiplied by this under each profile.
_SCALE = {"ci": 1, "thorough": 10}


def active_profile() -> str:
    """The profile named by ``ADMISSION_SIM_HYPOTHESIS_PROFILE`` (``ci`` when unset)."""
    name = os.environ.get(PROFILE_ENV, "ci").strip() or "ci"
    if name not in _SCALE:
        raise ValueError(f"{PROFILE_ENV}={name!r}: expected one of {sorted(_SCALE)}")
    return name


def examples(n: int) -> settings:
    """Settings for one test: ``n`` examples under ``ci``, scaled up under ``thorough``.

    Applied per test (not with ``settings.load_profile``) so that importing this module never
    changes the settings of other contributors' hypothesis tests.
    """
    name = active_profile()
    return settings(settings.get_profile(name), max_examples=n * _SCALE[name])


POLICY_NAMES = ("fixed", "global", "localized")
PATTERNS = ("never", "always", "window", "probability", "capacity")
#: Provider/model pairs are drawn from small pools so that aliases collide on purpose.
PROVIDERS = ("p1", "p2")
MODEL_IDS = ("m1", "m2")
DOMAINS = ("chat", "embedding", "image", "healthcheck")

small_time = st.sampled_from([0.0, 0.001, 0.01, 0.05, 0.2, 0.5])


@st.composite
def latencies(draw: st.DrawFn) -> dict[str, Any]:
    dist = draw(st.sampled_from(["constant", "exponential", "uniform", "lognormal"]))
    if dist == "uniform":
        low = draw(st.sampled_from([0.0, 0.01, 0.1]))
        return {"distribution": dist, "low": low, "high": low + draw(st.sampled_from([0.0, 0.05, 0.3]))}
    out: dict[str, Any] = {"distribution": dist, "mean": draw(small_time)}
    if dist == "lognormal":
        out["cv"] = draw(st.sampled_from([0.1, 0.5, 2.0]))
    return out


@st.composite
def rate_limits(draw: st.DrawFn, finite: bool = False) -> dict[str, Any]:
    """A 429 pattern; with ``finite`` only patterns whose 429s surely stop (never, window with an
    end, probability below 1, capacity)."""
    patterns = [p for p in PATTERNS if p != "always"] if finite else PATTERNS
    pattern = draw(st.sampled_from(patterns))
    out: dict[str, Any] = {"pattern": pattern}
    if pattern == "never":
        return out
    out["latency"] = draw(st.sampled_from([0.0, 0.0, 0.01, 0.1]))
    out["retry_after"] = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5]))
    if pattern == "window":
        out["start"] = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5]))
        if finite or draw(st.booleans()):
            out["end"] = out["start"] + draw(st.sampled_from([0.05, 0.3, 1.0]))
    elif pattern == "probability":
        out["probability"] = draw(st.sampled_from([0.1, 0.3, 0.6] if finite else [0.1, 0.3, 0.6, 1.0]))
    elif pattern == "capacity":
        out["requests_per_minute"] = draw(st.sampled_from([600.0, 3000.0, 30000.0]))
        if draw(st.booleans()):
            out["burst"] = draw(st.sampled_from([1.0, 2.0, 5.0]))
    return out


def never_ends(rate_limit: dict[str, Any]) -> bool:
    """Mirror of ``RateLimitConfig.never_ends`` on the dict form."""
    pattern = rate_limit.get("pattern", "never")
    return (
        pattern == "always"
        or (pattern == "window" and rate_limit.get("end") is None)
        or (pattern == "probability" and rate_limit.get("probability", 0.0) >= 1.0)
    )


@st.composite
def models(draw: st.DrawFn, finite: bool = False) -> list[dict[str, Any]]:
    """1-4 model aliases; sometimes a twin alias on the same provider/model with another domain."""
    n = draw(st.integers(1, 4))
    out = []
    for i in range(n):
        out.append(
            {
                "name": f"model{i}",
                "provider": draw(st.sampled_from(PROVIDERS)),
                "model_id": draw(st.sampled_from(MODEL_IDS)),
                "domain": draw(st.sampled_from(DOMAINS)),
                "max_parallel_requests": draw(st.integers(1, 4)),
                "latency": draw(latencies()),
                "rate_limit": draw(rate_limits(finite)),
            }
        )
    if draw(st.booleans()):  # several domains on one provider/model
        twin = dict(draw(st.sampled_from(out)))
        twin["name"] = f"model{n}"
        twin["domain"] = draw(st.sampled_from([d for d in DOMAINS if d != twin["domain"]]))
        twin["rate_limit"] = draw(rate_limits(finite))
        out.append(twin)
    return out


@st.composite
def columns(draw: st.DrawFn, model_names: list[str], max_columns: int = 8) -> list[dict[str, Any]]:
    """A DAG of 1-``max_columns`` columns grouped in generators.

    Each generator picks its upstream among columns of earlier generators (so the DAG is acyclic
    and chains, fans and diamonds all occur); a generator with several outputs is a multi-output
    generator whose columns share strategy, kind, model and depends_on, as the scenario requires.
    """
    cols: list[dict[str, Any]] = []
    g = 0
    while len(cols) < max_columns:
        room = max_columns - len(cols)
        outputs = draw(st.integers(1, min(3, room))) if draw(st.integers(0, 3)) == 0 else 1
        kind = draw(st.sampled_from(["local", "local", "model", "model", "custom_model"]))
        strategy = draw(st.sampled_from(["cell_by_cell", "full_column"]))
        model = draw(st.sampled_from(model_names)) if kind != "local" else None
        deps = sorted(draw(st.sets(st.sampled_from([c["name"] for c in cols]), max_size=3))) if cols else []
        duration = draw(small_time) if kind == "local" else 0.0
        weight = draw(st.none() | st.integers(1, 3)) if kind != "model" else None
        gen_name = f"gen{g}" if outputs > 1 else None
        for _ in range(outputs):
            col: dict[str, Any] = {"name": f"c{len(cols)}", "strategy": strategy, "depends_on": deps}
            if kind != "local":
                col["model"] = model
            if kind == "custom_model" or (kind == "local" and draw(st.booleans())):
                col["kind"] = kind  # "model" is implied by the model; "local" may be spelled out
            if gen_name is not None:
                col["generator"] = gen_name
            if duration:
                col["duration"] = duration
            if weight is not None:
                col["weight"] = weight
            cols.append(col)
        g += 1
        if draw(st.integers(0, max_columns)) == 0:
            break
    return cols


@st.composite
def row_groups(draw: st.DrawFn) -> dict[str, Any]:
    """``count`` x ``size`` or ``num_records`` / ``buffer_size`` (partial last group)."""
    if draw(st.booleans()):
        return {"count": draw(st.integers(1, 6)), "size": draw(st.sampled_from([1, 1, 2, 3, 4]))}
    buffer_size = draw(st.integers(1, 5))
    return {"num_records": draw(st.integers(1, 16)), "buffer_size": buffer_size}


limit = st.sampled_from([1, 1, 2, 3, 8, 1024])


@st.composite
def schedulers(draw: st.DrawFn, policy: str | None = None) -> dict[str, Any]:
    return {
        "policy": policy or draw(st.sampled_from(POLICY_NAMES)),
        "max_concurrent_row_groups": draw(st.sampled_from([1, 1, 2, 3, 6, 64])),
        "initial_target": draw(st.sampled_from([1, 1, 2, 4])),
        "max_in_flight_tasks": draw(limit),
        "max_model_task_admission": draw(limit),
        "salvage_max_rounds": draw(st.integers(1, 3)),
        "resalvage_backoff": draw(st.sampled_from([0.01, 0.05, 0.2])),
        "request_pressure_advisory": draw(st.booleans()),
        "borrow_reserve_fraction": draw(st.sampled_from([0.0, 0.0, 0.25, 0.5])),
    }


@st.composite
def request_admissions(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "enabled": draw(st.booleans()),
        "cooldown_seconds": draw(st.sampled_from([0.0, 0.1, 0.5, 2.0])),
        "decrease_factor": draw(st.sampled_from([0.5, 0.75])),
        "increase_step": draw(st.integers(1, 2)),
        "successes_until_increase": draw(st.integers(1, 5)),
        "startup_ramp_seconds": draw(st.sampled_from([0.0, 0.0, 0.5])),
    }


@st.composite
def scenario_dicts(
    draw: st.DrawFn,
    *,
    finite: bool = False,
    stop_rules: bool = True,
    policy: str | None = None,
    max_columns: int = 8,
) -> dict[str, Any]:
    """A valid scenario as a dict.

    ``finite`` draws only 429 patterns that stop, so that a run can complete. ``stop_rules=False``
    draws no stop rule at all (run to completion) and requires ``finite``. Otherwise a
    ``stop.max_time`` is always present when a used model never stops answering 429, as validation
    demands, and the other stop rules are drawn at random.
    """
    if not stop_rules and not finite:
        raise ValueError("a run to completion needs finite 429 patterns")
    model_list = draw(models(finite))
    cols = draw(columns([m["name"] for m in model_list], max_columns=max_columns))
    data: dict[str, Any] = {
        "name": "prop",
        "seed": draw(st.integers(0, 2**32 - 1)),
        "row_groups": draw(row_groups()),
        "models": model_list,
        "columns": cols,
        "scheduler": draw(schedulers(policy)),
        "request_admission": draw(request_admissions()),
    }
    used = {c.get("model") for c in cols}
    endless = any(never_ends(m["rate_limit"]) and m["name"] in used for m in model_list)
    stop: dict[str, Any] = {}
    if endless or (stop_rules and draw(st.booleans())):
        stop["max_time"] = draw(st.sampled_from([0.5, 2.0, 5.0]))
    if stop_rules:
        if draw(st.integers(0, 3)) == 0:
            model_cols = [c["name"] for c in cols if c.get("model") is not None]
            if model_cols:
                stop["successful_calls"] = {
                    "columns": draw(st.lists(st.sampled_from(model_cols), min_size=1, max_size=3, unique=True)),
                    "count": draw(st.integers(1, 10)),
                }
        if draw(st.integers(0, 3)) == 0:
            stop["completed_rows"] = draw(st.integers(1, 8))
    if stop:
        data["stop"] = stop
    return data


#: The regimes in which valid scenarios used to run away (retry or pause without end while memory
#: grew); ``hostile_scenario_dicts`` applies at least one of them to a scenario drawn as above.
HOSTILE_REGIMES = ("zero_latency", "always_429_tiny_backoff", "thousands_of_row_groups", "short_horizon", "no_cooldown")


@st.composite
def hostile_scenario_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid scenario in one or more runaway regimes, always with a small ``stop.max_events``.

    Zero latencies everywhere (nothing advances the clock but pauses); one used model answering
    429 forever with a resalvage backoff of 0.1-1 ms; 1,000-3,000 one-row groups; a horizon of
    1-50 ms; request admission on with no cooldown. Without the run budget the first two spin at
    one simulated instant for minutes; with it every run must stop by ``max_events`` or earlier.
    """
    data = draw(scenario_dicts())
    regimes = draw(st.sets(st.sampled_from(HOSTILE_REGIMES), min_size=1, max_size=3))
    used = sorted({c["model"] for c in data["columns"] if c.get("model") is not None})
    stop = dict(data.get("stop", {}))
    if "zero_latency" in regimes:
        for m in data["models"]:
            m["latency"] = {"distribution": "constant", "mean": 0.0}
            if m["rate_limit"].get("pattern", "never") != "never":
                m["rate_limit"]["latency"] = 0.0
        for c in data["columns"]:
            c.pop("duration", None)
    if "always_429_tiny_backoff" in regimes and used:
        victim = draw(st.sampled_from(used))
        for m in data["models"]:
            if m["name"] == victim:
                m["rate_limit"] = {"pattern": "always", "latency": draw(st.sampled_from([0.0, 0.0, 1e-4]))}
        data["scheduler"]["resalvage_backoff"] = draw(st.sampled_from([1e-4, 1e-4, 1e-3]))
        stop.setdefault("max_time", draw(st.sampled_from([1.0, 60.0, 1e9])))
    if "thousands_of_row_groups" in regimes:
        data["row_groups"] = {"count": draw(st.sampled_from([1000, 2048, 3000])), "size": 1}
        stop.pop("completed_rows", None)
    if "short_horizon" in regimes:
        stop["max_time"] = draw(st.sampled_from([1e-3, 1e-2, 5e-2]))
    if "no_cooldown" in regimes:
        data["request_admission"]["enabled"] = True
        data["request_admission"]["cooldown_seconds"] = 0.0
    stop["max_events"] = draw(st.sampled_from([300, 1000, 2000]))
    data["stop"] = stop
    return data


def total_rows(data: dict[str, Any]) -> int:
    rg = data["row_groups"]
    return rg["count"] * rg["size"] if "count" in rg else rg["num_records"]
