"""The monitoring files of docker/: Prometheus alert rules, its scrape configurations,
the Grafana dashboard and its provisioning, and the compose profile "monitoring".

* The rules pass `promtool check rules`, and their unit tests (docker/prometheus/
  alerts_test.yml) pass `promtool test rules`: each alert fires on the series in
  trouble and not on the healthy ones beside them. Both Prometheus configurations
  pass `promtool check config`. promtool comes with Debian's prometheus package
  (.ci/run installs it); without it those tests skip.
* Every PromQL expression of the rules and the dashboard names only series and labels
  that a real `bounceback run` exports: its /metrics is scraped after traffic that
  makes each of them appear, so neither can drift from the code. A real Prometheus
  (Debian's package has the server too) then scrapes such a proxy with the shipped
  configuration: every rule evaluates without error and none fires on the healthy
  proxy, and every dashboard panel and variable gets data.
* The dashboard has the shape Grafana reads (unique panel ids, a datasource and
  targets on every panel, a grid of 24 columns, defined template variables), and its
  expressions parse as PromQL (promtool).
* The compose files start Prometheus and Grafana only with the profile, on the
  loopback interface only, with these files mounted where the configurations say;
  `docker compose config` checks them where the Compose plugin is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from bounceback.config.settings import load_config
from bounceback.feed.events import EVENT_NAMES
from bounceback.gateway.metrics import FAULT_EVENTS, RECEIPT_RESULTS, RECEIPT_STATS
from harness import FAST_RETRY, ProxyProcess, free_port, simulator, wait_until, write_config
from prometheus_client.parser import text_string_to_metric_families
from smppcodecs.constants import CommandStatus
from smpplib_peer import SmpplibSender
from test_docker import ENV, compose_documents

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PROMETHEUS = DOCKER / "prometheus"
GRAFANA = DOCKER / "grafana"
RULES = PROMETHEUS / "alerts.yml"
RULES_TEST = PROMETHEUS / "alerts_test.yml"
DASHBOARD = GRAFANA / "dashboards" / "bounceback.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "bounceback.yml"
# (compose file, its Prometheus configuration, the proxy config its instances run)
COMPOSE = (
    ("compose.yaml", "prometheus.yml", "bounceback.toml"),
    ("compose.scale.yaml", "prometheus.scale.yml", "bounceback-shared.toml"),
)
DS_REF = {"type": "prometheus", "uid": "${datasource}"}

yaml: Any = importlib.import_module("yaml")  # PyYAML (a dependency of the dev tools)
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian's prometheus package; .ci/run installs it)",
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe is not None
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    out: list[dict[str, Any]] = []
    for p in dashboard()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def variable_selectors() -> list[str]:
    """The series selectors of the dashboard's label_values() variables."""
    out = []
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
        assert m is not None, var["definition"]
        out.append(m.group(1))
    return out


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every rule and every dashboard query."""
    out = [(f"alert {r['alert']}", str(r["expr"])) for r in alert_rules()]
    for p in dashboard_panels():
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    out += [("variable", sel) for sel in variable_selectors()]
    return out


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced as Grafana would."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


# ---------------------------------------------------------------- a PromQL reader

_TOKEN = re.compile(
    r"""\s+|(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<range>\[[^\]]*\])"""
    r"""|(?P<num>\d+(?:\.\d+)?(?:e[-+]?\d+)?)|(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)"""
    r"""|(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){},])"""
)
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}


@attrs.frozen
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)


@attrs.frozen
class Parsed:
    selectors: tuple[Selector, ...]
    grouping: frozenset[str]  # labels of by (...), on (...), without (...), ...


def tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        assert m is not None and m.end() > pos, f"cannot read {expr[pos:]!r}"
        pos = m.end()
        if m.lastgroup:
            out.append((m.lastgroup, m.group()))
    return out


def parse(expr: str) -> Parsed:
    """The series selectors and grouping labels of a PromQL expression: enough PromQL
    to find every metric and label name it uses (promtool checks the syntax)."""
    toks = tokens(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    i = 0

    def matchers(start: int) -> tuple[tuple[tuple[str, str, str], ...], int]:
        found = []
        j = start + 1  # after "{"
        while toks[j] != ("op", "}"):
            if toks[j] == ("op", ","):
                j += 1
                continue
            label, op, value = toks[j][1], toks[j + 1][1], toks[j + 2]
            assert toks[j][0] == "id" and op in ("=", "!=", "=~", "!~") and value[0] == "str"
            found.append((label, op, json.loads(value[1]) if value[1][0] == '"' else value[1]))
            j += 3
        return tuple(found), j + 1

    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "id" and text in GROUPING:
            if nxt == ("op", "("):
                j = i + 2
                while toks[j] != ("op", ")"):
                    if toks[j][0] == "id":
                        grouping.add(toks[j][1])
                    j += 1
                i = j + 1
            else:
                i += 1
        elif kind == "id" and (nxt == ("op", "(") or nxt in (("id", "by"), ("id", "without"))):
            i += 1  # a function or an aggregation
        elif kind == "id" and text.lower() in KEYWORDS:
            i += 1
        elif kind == "id":
            if nxt == ("op", "{"):
                found, i = matchers(i + 1)
            else:
                found, i = (), i + 1
            selectors.append(Selector(text, found))
        elif (kind, text) == ("op", "{"):
            found, i = matchers(i)
            name = [v for label, op, v in found if label == "__name__" and op == "="]
            assert name, f"a selector without a metric name: {expr}"
            selectors.append(Selector(name[0], found))
        else:
            i += 1
    return Parsed(tuple(selectors), frozenset(grouping))


def test_promql_reader() -> None:
    got = parse(
        'sum by (carrier) (rate(bounceback_messages_total{job=~"$job", outcome=~"a|b"}[5m]))'
        " / on (carrier) group_left (x) up > 0.2 and histogram_quantile(0.99, sum by (le) "
        '(rate(m_bucket[$__rate_interval]))) unless {__name__="other", a!="x"} or vector(0)'
        " + max without (y) (z)"
    )
    assert got.selectors == (
        Selector("bounceback_messages_total", (("job", "=~", "$job"), ("outcome", "=~", "a|b"))),
        Selector("up", ()),
        Selector("m_bucket", ()),
        Selector("other", (("__name__", "=", "other"), ("a", "!=", "x"))),
        Selector("z", ()),
    )
    assert got.grouping == {"carrier", "x", "le", "y"}


# ---------------------------------------------------------------- the alert rules


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in res.stdout


@needs_promtool
def test_rules_unit_tests_pass() -> None:
    res = promtool("test", "rules", RULES_TEST.name, cwd=PROMETHEUS)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout and "FAILED" not in res.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """The unit tests hold, for each alert, a moment it fires and one it does not."""
    firing: set[str] = set()
    quiet: set[str] = set()
    doc = load_yaml(RULES_TEST)
    assert doc["rule_files"] == [RULES.name]
    for test in doc["tests"]:
        for case in test["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
            for alert in case["exp_alerts"]:
                assert alert["exp_labels"]["severity"] in ("critical", "warning")
    names = {r["alert"] for r in alert_rules()}
    assert firing == names, names ^ firing
    assert quiet == names, names ^ quiet


def test_rules_have_for_severity_and_annotations() -> None:
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    for r in rules:
        assert re.fullmatch(r"Bounceback[A-Z]\w+", r["alert"]), r["alert"]
        assert re.fullmatch(r"\d+[smh]", r["for"]), r
        assert r["labels"]["severity"] in ("critical", "warning"), r
        assert set(r["annotations"]) == {"summary", "description"}, r
        assert all(v.strip() for v in r["annotations"].values())
    assert {
        "BouncebackDown",
        "BouncebackCarrierDown",
        "BouncebackBounceRateSpike",
        "BouncebackHeldGrowing",
        "BouncebackStoreNotWritable",
        "BouncebackFeedBacklogGrowing",
        "BouncebackNoReceipts",
    } <= {r["alert"] for r in rules}


def test_readme_lists_every_alert() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Monitoring\n", 1)[1].split("\n## ", 1)[0]
    for r in alert_rules():
        row = [ln for ln in section.splitlines() if ln.startswith(f"| `{r['alert']}` |")]
        assert len(row) == 1, r["alert"]
        assert f"| {r['for']} |" in row[0] and r["labels"]["severity"] in row[0], row[0]


# ---------------------------------------------------------------- Prometheus


@pytest.mark.parametrize(("compose", "config", "proxy"), COMPOSE)
def test_prometheus_scrapes_the_compose_proxies(compose: str, config: str, proxy: str) -> None:
    """The scrape targets are the compose file's proxy services on their [metrics] port,
    and the rule file is where the compose file mounts alerts.yml."""
    prom = load_yaml(PROMETHEUS / config)
    cfg = load_config(DOCKER / proxy, environ=ENV)
    assert cfg.metrics is not None and cfg.metrics.host == "0.0.0.0"
    (job,) = prom["scrape_configs"]
    assert job["job_name"] == "bounceback" and job["metrics_path"] == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    for doc in compose_documents(compose):
        services = doc["services"]
        proxies = {n for n in services if n.startswith("bounceback")}
        assert sorted(targets) == sorted(f"{n}:{cfg.metrics.port}" for n in proxies)
        mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
        assert mounts[f"./prometheus/{config}"] == "/etc/prometheus/prometheus.yml"
        assert prom["rule_files"] == [mounts["./prometheus/alerts.yml"]]


@needs_promtool
@pytest.mark.parametrize("config", [c for _, c, _ in COMPOSE])
def test_prometheus_config_passes_promtool_check(config: str, tmp_path: Path) -> None:
    """promtool reads the rule files a configuration names: here the rule file is
    where the container has it, so the copy checked names the repository's file."""
    text = (PROMETHEUS / config).read_text()
    assert "  - /etc/prometheus/alerts.yml\n" in text
    local = tmp_path / config
    local.write_text(text.replace("/etc/prometheus/alerts.yml", str(RULES)))
    res = promtool("check", "config", str(local))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in res.stdout + res.stderr


# ---------------------------------------------------------------- the dashboard


def test_dashboard_shape() -> None:
    dash = dashboard()
    assert dash["uid"] == "bounceback" and dash["title"] == "Bounceback"
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert "id" not in dash or dash["id"] is None  # Grafana assigns it
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    cells: set[tuple[int, int]] = set()
    kinds = set()
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        assert p["title"].strip()
        kinds.add(p["type"])
        if p["type"] == "row":
            continue
        assert p["type"] in ("stat", "timeseries", "state-timeline"), p["type"]
        assert p["datasource"] == DS_REF, p["title"]
        assert p["description"].strip(), p["title"]
        assert p["fieldConfig"]["defaults"]["unit"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS_REF and t["expr"].strip(), p["title"]
            # Every variable a query uses is one the dashboard defines.
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in variables or var.startswith("__"), (p["title"], var)
    assert {"row", "stat", "timeseries", "state-timeline"} <= kinds
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == DS_REF and v["definition"] == v["query"]["query"]


def test_dashboard_covers_what_operators_watch() -> None:
    """The series each part of the dashboard is about are on it."""
    used = {s.metric for _, e in expressions() for s in parse(as_promql(e)).selectors}
    assert {
        "bounceback_messages_total",  # throughput, outcomes, bounce rates per carrier/account
        "bounceback_retry_attempts_total",  # retries by reason
        "bounceback_held_messages",  # held now, by reason
        "bounceback_carrier_receipts_total",
        "bounceback_sender_submit_seconds_bucket",  # latency quantiles
        "bounceback_carrier_submit_seconds_bucket",
        "bounceback_store_commit_seconds_bucket",
        "bounceback_outbox_backlog",  # the feed
        "bounceback_feed_connected",
        "bounceback_store_writable",  # the store
        "bounceback_binds_current",  # carrier links
        "bounceback_carrier_healthy",
    } <= used
    titles = {p["title"] for p in dashboard_panels()}
    assert {"Bounce rate per carrier", "Retries by reason", "Held messages by reason"} <= titles


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each query (variables replaced as Grafana does) as a recording rule: promtool
    parses them all."""
    rules = [
        {"record": f"bounceback_dashboard:query{n}", "expr": as_promql(expr)}
        for n, (where, expr) in enumerate(expressions())
        if not where.startswith("alert ")
    ]
    assert len(rules) > 30
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = promtool("check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rules)} rules found" in res.stdout


def test_grafana_provisioning_matches_compose() -> None:
    ds = load_yaml(DATASOURCES)
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    (provider,) = load_yaml(PROVIDERS)["providers"]
    assert provider["type"] == "file"
    for compose, _, _ in COMPOSE:
        for doc in compose_documents(compose):
            services = doc["services"]
            assert "prometheus" in services
            assert "127.0.0.1:9090:9090" in services["prometheus"]["ports"]
            mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
            assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
            assert mounts["./grafana/dashboards"] == provider["options"]["path"]
            home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
            assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


# ---------------------------------------------------------------- the compose profile


@pytest.mark.parametrize("compose", [c for c, _, _ in COMPOSE])
def test_compose_monitoring_profile(compose: str) -> None:
    for doc in compose_documents(compose):
        services = doc["services"]
        monitoring = {n for n, s in services.items() if "monitoring" in s.get("profiles", [])}
        assert monitoring == {"prometheus", "grafana"}
        for name in monitoring:
            svc = services[name]
            assert svc["profiles"] == ["monitoring"]
            # Published on the loopback interface only.
            assert svc["ports"] and all(p.startswith("127.0.0.1:") for p in svc["ports"])
            image, _, tag = svc["image"].partition(":")
            assert image in ("prom/prometheus", "grafana/grafana") and re.match(r"v?\d+\.", tag)
            for volume in svc["volumes"]:
                source = volume.split(":")[0]
                if source.startswith("./"):  # a file of this folder, read-only
                    assert (DOCKER / source).exists(), volume
                    assert volume.endswith(":ro"), volume
                else:
                    assert source in doc["volumes"], volume
        prom = services["prometheus"]
        assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
        grafana = services["grafana"]
        assert grafana["depends_on"] == ["prometheus"]
        assert "GF_SECURITY_ADMIN_PASSWORD" in grafana["environment"]


def test_docker_compose_config_with_monitoring() -> None:
    """`docker compose config --profile monitoring` where the Compose plugin exists."""
    try:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no docker CLI ({exc}); the compose files are checked structurally above")
    if probe.returncode != 0:
        pytest.skip(
            "the docker CLI has no Compose plugin ("
            + (probe.stderr or probe.stdout).strip().splitlines()[0]
            + "); the compose files are checked structurally above"
        )
    for compose, _, _ in COMPOSE:
        res = subprocess.run(
            [
                *("docker", "compose", "-f", str(DOCKER / compose)),
                *("--profile", "monitoring", "config", "--format", "json"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **ENV},
        )
        assert res.returncode == 0, res.stderr
        services = json.loads(res.stdout)["services"]
        assert {"prometheus", "grafana"} <= set(services)
        for name in ("prometheus", "grafana"):
            assert all(p["host_ip"] == "127.0.0.1" for p in services[name]["ports"])


# ---------------------------------------------------------------- against a live proxy

# Label values that the code names in a closed list (the others are configuration
# names: accounts, carriers, reasons).
KNOWN_VALUES = {
    "outcome": set(EVENT_NAMES),
    "side": {"esme", "carrier"},
    "direction": {"in", "out"},
    "status": {s.name for s in CommandStatus},
    "what": set(FAULT_EVENTS),
    "stat": set(RECEIPT_STATS) | {"other"},
    "result": set(RECEIPT_RESULTS) | {"ok", "failed"} | {s.name for s in CommandStatus},
}
FROM_PROMETHEUS = {"up": {"job", "instance"}}  # series Prometheus makes, not the proxy
TARGET_LABELS = {"job", "instance"}  # labels Prometheus adds to every scraped series


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body: bytes = resp.read()
    return body.decode()


def series_labels(text: str) -> dict[str, set[str]]:
    """Each sample name of a scrape, with the label names its samples carry."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def words(value: str) -> Iterator[str]:
    """The literal values a matcher names (a|b|c), none for patterns or variables."""
    if "$" in value or re.search(r"[.*+?\[\]()\\^]", value):
        return
    yield from value.split("|")


def problems(
    exported: dict[str, set[str]], exprs: list[tuple[str, str]] | None = None
) -> list[str]:
    """What the expressions (by default: the rules' and the dashboard's) use that the
    scrape `exported` (sample name -> label names) does not have."""
    known = {**exported, **FROM_PROMETHEUS}
    found = []
    for where, expr in expressions() if exprs is None else exprs:
        parsed = parse(as_promql(expr) if "$" in expr else expr)
        labels_here: set[str] = set(TARGET_LABELS)
        for sel in parsed.selectors:
            if sel.metric not in known:
                found.append(f"{where}: {sel.metric} is not exported")
                continue
            have = known[sel.metric] | TARGET_LABELS
            labels_here |= have
            for label, _, value in sel.matchers:
                if label != "__name__" and label not in have:
                    found.append(f"{where}: {sel.metric} has no label {label}")
                for word in words(value):
                    if label in KNOWN_VALUES and word not in KNOWN_VALUES[label]:
                        found.append(f"{where}: {label}={word!r} is never exported")
        for label in parsed.grouping - labels_here:
            found.append(f"{where}: no series of the expression has the label {label}")
    return found


def test_problems_are_found() -> None:
    """The check below finds a series that is not there, a label a series does not
    have, a value the code never exports, and a grouping label no series has."""
    exported = {"bounceback_messages_total": {"outcome", "account", "carrier"}}
    good = (
        'sum by (carrier, instance) (rate(bounceback_messages_total{outcome=~"delivered|expired",'
        ' job="$job"}[5m])) > 0 and up == 1'
    )
    assert problems(exported, [("good", good)]) == []
    bad = [
        ("a", 'sum by (reason) (rate(bounceback_messages_total{outcome="bounced"}[5m]))'),
        ("b", 'bounceback_messages{carier="sim"} + bounceback_messages_total{stat="x"}'),
    ]
    assert problems(exported, bad) == [
        "a: outcome='bounced' is never exported",
        "a: no series of the expression has the label reason",
        "b: bounceback_messages is not exported",
        "b: bounceback_messages_total has no label stat",
        "b: stat='x' is never exported",
    ]
    assert problems(exported)  # the real expressions use much more than this


def needed_series() -> set[str]:
    """The proxy's series the rules and the dashboard use."""
    return {
        s.metric
        for _, e in expressions()
        for s in parse(as_promql(e)).selectors
        if s.metric not in FROM_PROMETHEUS
    }


@contextlib.asynccontextmanager
async def live_proxy(tmp_path: Path) -> AsyncIterator[tuple[int, dict[str, set[str]]]]:
    """A real `bounceback run` with [metrics] and the carrier simulator, after traffic
    that makes every series of the rules and the dashboard appear: a delivery, a retry
    after a soft bounce, a throttled submission, a message held, a hard bounce, a
    refused number. Yields its metrics port and its scrape (sample name -> labels)."""
    retry = FAST_RETRY.replace(
        "[retry.schedules.memory_full]\ninitial = 0.3\nfactor = 1.0\nmax = 0.3",
        "[retry.schedules.memory_full]\ninitial = 600.0\nfactor = 1.0\nmax = 600.0",
    )
    assert retry != FAST_RETRY
    scenario = {
        "receipt_delay": 0.02,
        "rules": [
            {"number": "447700930501", "outcomes": ["absent", "deliver"]},
            {"number": "447700930502", "outcomes": ["memory_full", "deliver"]},
            {"number": "447700930503", "outcomes": ["unknown"]},
            {"number": "447700930504", "outcomes": ["throttle", "deliver"]},
        ],
    }
    metrics_port = free_port()
    extra = f'[metrics]\nhost = "127.0.0.1"\nport = {metrics_port}\n'
    needed = needed_series()
    async with simulator(scenario) as sim:
        port = free_port()
        proxy = ProxyProcess(
            write_config(tmp_path, sim.port or 0, port=port, extra=extra, retry=retry)
        )
        await asyncio.to_thread(proxy.start)
        try:
            await wait_until(lambda: sim.bound_receivers("bounceback") == 1, timeout=15)
            sender = SmpplibSender("127.0.0.1", port)
            assert await asyncio.to_thread(sender.bind, "transceiver", "acme", "acme-pw") == 0
            sender.listen()
            for number in ("447700930500", "447700930501", "447700930502", "447700930503"):
                seq = await asyncio.to_thread(sender.submit, number)
                assert (await asyncio.to_thread(sender.wait_resp, seq))[0] == 0
            seq = await asyncio.to_thread(sender.submit, "447700930504")
            await asyncio.to_thread(sender.wait_resp, seq)
            # Delivered (two after a retry), and the hard bounce's receipt.
            await asyncio.to_thread(sender.wait_delivered, 4, 20.0)
            # The hard-bounced number is refused from now on.
            seq = await asyncio.to_thread(sender.submit, "447700930503")
            assert (await asyncio.to_thread(sender.wait_resp, seq))[0] != 0
            # Until every series is there (the held count is read from the store
            # at most once a second), or 20 tries: what is missing is reported below.
            for _ in range(20):
                exported = series_labels(await asyncio.to_thread(scrape_text, metrics_port))
                if needed <= set(exported):
                    break
                await asyncio.sleep(1.0)
            yield metrics_port, exported
            await asyncio.to_thread(sender.close)
        finally:
            assert await asyncio.to_thread(proxy.terminate) == 0


async def test_expressions_use_only_what_a_live_proxy_exports(tmp_path: Path) -> None:
    """Every metric name, label name and known label value the rules and the
    dashboard use, checked against the /metrics of a real `bounceback run`."""
    needed = needed_series()
    async with live_proxy(tmp_path) as (_, exported):
        pass
    assert needed - set(exported) == set(), "not in the scrape: " + ", ".join(
        sorted(needed - set(exported))
    )
    assert problems(exported) == []
    # The rules and the dashboard use the process' own series too.
    assert "process_cpu_seconds_total" in needed and "bounceback_held_messages" in needed
    # The throttled submission's answer is there under the status the dashboard reads.
    assert "status" in exported["bounceback_pdus_total"]


def prometheus_api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as resp:
        doc = json.loads(resp.read())
    assert doc["status"] == "success", (path, params, doc)
    return doc["data"]


def prometheus_query(port: int, query: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = prometheus_api(port, "query", query=query)["result"]
    return result


def start_prometheus(exe: str, folder: Path, port: int) -> subprocess.Popen[bytes]:
    with (folder / "prometheus.log").open("wb") as out:
        return subprocess.Popen(
            [
                exe,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus is not installed (Debian's prometheus package; .ci/run installs it)",
)
async def test_prometheus_runs_the_rules_and_the_dashboard_on_a_live_proxy(
    tmp_path: Path,
) -> None:
    """A real Prometheus, with docker/prometheus/prometheus.yml pointed at a real
    `bounceback run` (scraping every second): every rule evaluates without error,
    none fires on the healthy proxy, and every dashboard panel and variable gets
    data."""
    exe = shutil.which("prometheus")
    assert exe is not None
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    prom_port = free_port()
    async with live_proxy(tmp_path) as (metrics_port, _):
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = tmp_path / "prometheus.log"
        prom = start_prometheus(exe, tmp_path, prom_port)
        try:

            def scraped(n: int) -> bool:
                if prom.poll() is not None:
                    raise AssertionError(log.read_text(errors="replace"))
                try:
                    got = prometheus_query(
                        prom_port, 'count_over_time(up{job="bounceback"}[1m]) >= ' + str(n)
                    )
                except OSError:
                    return False
                return bool(got)

            # Enough scrapes for rates over the window the queries are given below.
            for _ in range(60):
                if await asyncio.to_thread(scraped, 4):
                    break
                await asyncio.sleep(0.5)
            assert prometheus_query(prom_port, 'up{job="bounceback"}')[0]["value"][1] == "1"
            # Every rule evaluated, and without error.
            for _ in range(60):
                groups = await asyncio.to_thread(prometheus_api, prom_port, "rules")
                rules = [r for g in groups["groups"] for r in g["rules"]]
                if all(not r["lastEvaluation"].startswith("0001-") for r in rules):
                    break
                await asyncio.sleep(0.5)
            assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
            for r in rules:
                assert r["health"] == "ok" and not r.get("lastError"), r
                # A healthy proxy (carrier bound, store writable): nothing fires or pends.
                assert r["state"] == "inactive", r
            # Every panel has data (the window is what Grafana's $__rate_interval would
            # be for a 1 s scrape interval), every variable has values.
            empty = []
            for p in dashboard_panels():
                if p["type"] == "row":
                    continue
                results = [
                    await asyncio.to_thread(
                        prometheus_query,
                        prom_port,
                        as_promql(t["expr"].replace("$__rate_interval", "30s")),
                    )
                    for t in p["targets"]
                ]
                if not any(results):
                    empty.append(p["title"])
            assert empty == []
            for sel in variable_selectors():
                assert await asyncio.to_thread(prometheus_query, prom_port, as_promql(sel))
        finally:
            prom.terminate()
            await asyncio.to_thread(prom.wait, 30)
