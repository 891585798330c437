#!/usr/bin/python3
"""Checks tokenwatch's deployment files without Docker or a cluster.

Usage:
    /usr/bin/python3 tests/deploy/check_manifests.py [BINARY] [--docker-dir DIR]

BINARY is the tokenwatch binary whose `--help` gives the settings table
(default: $TW_BINARY, else build/tokenwatch); DIR holds Dockerfile,
compose.yaml and k8s/*.yaml (default: docker/ of this repository). Point
--docker-dir at a copy to see a check fail.

What it checks, one line per check:
  - compose.yaml and every k8s/*.yaml parse (several documents allowed);
  - every TOKENWATCH_* name in them and in the Dockerfile (keys, values,
    comments) is in the settings table, and the settings each workload gets
    (image ENV + compose environment, or image ENV + ConfigMap + env) parse:
    `tokenwatch healthcheck` with them exits 1 (nothing listening), not 2
    (configuration error);
  - Dockerfile: two stages (debian:12 build, debian:12-slim runtime), the
    build stage copies only what make needs, the runtime stage runs as a
    non-root user, ENTRYPOINT tokenwatch, CMD run, EXPOSE 9470,
    TOKENWATCH_METRICS_ADDR=0.0.0.0:9470, HEALTHCHECK `tokenwatch healthcheck`;
  - compose: mongo as a replica set, the init service running rs.initiate,
    redis with appendonly and a volume, the consumer (consumer group, XACK),
    tokenwatch built from the Dockerfile with the redis sink on the stream the
    consumer reads, both waiting for the init service to complete, secrets
    as files under /run/secrets (TOKENWATCH_SLACK_WEBHOOK_FILE), each with a
    committed *.example and the real file git-ignored;
  - Kubernetes: the Deployment (2 replicas, RollingUpdate, no service links, the
    consumer and the tokenwatch sidecar, /healthz liveness and /readyz
    readiness on 9470, settings from a ConfigMap, the webhook as a file from
    a Secret, non-root, read-only root, all capabilities dropped, resources,
    a grace period for the last checkpoint), the CronJob (`status` every 5
    minutes, Forbid, the same ConfigMap and Secret), no Service named
    tokenwatch;
  - no secret inline: no Slack webhook URL with a real-looking path, no Slack
    token, no MongoDB/Redis URL with a real-looking password, in any file
    under DIR (real secret files under secrets/ are skipped: git ignores them).

Exit status: 0 when every check passes, 1 otherwise.
"""

import argparse
import glob
import json
import os
import re
import socket
import subprocess
import tempfile
import sys

try:
    import yaml
except ImportError:
    print("check_manifests: FAIL: the Python module yaml is missing: install "
          "python3-yaml (apt-get install python3-yaml) and run this with "
          "/usr/bin/python3", file=sys.stderr)
    sys.exit(1)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME_RE = re.compile(r"(?<![A-Za-z0-9_])TOKENWATCH_[A-Z0-9_]*[A-Z0-9]")
WEBHOOK = "TOKENWATCH_SLACK_WEBHOOK"
WEBHOOK_FILE = "TOKENWATCH_SLACK_WEBHOOK_FILE"
METRICS_PORT = 9470
# tokenwatch retries the last checkpoint for up to 10 s after SIGTERM.
MIN_GRACE_S = 15
BUILD_DEV_PACKAGES = ["libmongoc-dev", "libbson-dev", "libhiredis-dev",
                      "libcurl4-openssl-dev", "libssl-dev", "libmicrohttpd-dev",
                      "pkg-config", "gcc", "make"]
BUILD_COPY_ALLOWED = {"Makefile", "src", "include", "scripts"}


class Report:
    def __init__(self):
        self.checks = 0
        self.failed = []

    def check(self, cond, what, detail=""):
        self.checks += 1
        if cond:
            print(f"ok   {what}")
        else:
            print(f"FAIL {what}" + (f": {detail}" if detail else ""))
            self.failed.append(what)
        return bool(cond)

    def note(self, text):
        print(f"     {text}")


R = Report()


# --------------------------------------------------------------------------
# helpers

def rel(path):
    """The path relative to the working directory when it is below it."""
    r = os.path.relpath(path)
    return path if r.startswith("..") else r


def load_yaml(path):
    """All documents of a YAML file (empty ones dropped), or None."""
    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        R.check(False, f"{rel(path)} parses", str(e).replace("\n", " "))
        return None
    R.check(True, f"{rel(path)} parses ({len(docs)} document{'s' if len(docs) != 1 else ''})")
    return docs


def env_text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def as_list(x):
    if x is None:
        return []
    if isinstance(x, list):
        return x
    return [x]


def words(cmd):
    """A command (list, or string split on blanks) as a list of strings."""
    if cmd is None:
        return []
    if isinstance(cmd, str):
        return cmd.split()
    return [env_text(w) for w in cmd]


def duration_s(text):
    """Seconds in a compose duration (30s, 1m30s, 500ms) or None."""
    if isinstance(text, (int, float)):
        return float(text)
    total, rest = 0.0, str(text).strip()
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", rest):
        total += float(num) * units[unit]
    if not re.fullmatch(r"(\d+(?:\.\d+)?(ms|us|h|m|s))+", rest):
        return None
    return total


def split_addr(addr):
    """HOST:PORT (or [v6]:PORT) as (host, port) or (None, None)."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]*):(\d+)", addr or "")
    if not m:
        return None, None
    if m.group(1) is not None:
        return m.group(1), int(m.group(2))
    return m.group(3), int(m.group(4))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def url_host(url):
    m = re.match(r"[a-z+]+://(?:[^@/]*@)?([^/?]+)", url or "")
    return m.group(1) if m else None


def in_git_worktree(path):
    try:
        r = subprocess.run(["git", "-C", path, "rev-parse", "--is-inside-work-tree"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and r.stdout.strip() == "true"


def git_ignored(path):
    r = subprocess.run(["git", "-C", os.path.dirname(path), "check-ignore", "-q",
                        os.path.basename(path)], capture_output=True, timeout=10)
    return r.returncode == 0


# --------------------------------------------------------------------------
# the settings table

def settings_names(binary):
    try:
        r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    except OSError as e:
        R.check(False, f"the settings table from {binary} --help", str(e))
        return None
    names = set(NAME_RE.findall(r.stdout + r.stderr))
    R.check(r.returncode == 0 and len(names) >= 10,
            f"the settings table from {rel(binary)} --help: {len(names)} TOKENWATCH_* names",
            f"exit {r.returncode}, {len(names)} names")
    return names if names else None


def names_in(path, docs, table):
    """Every TOKENWATCH_* name in a file: as a key, in a string, or in a
    comment (the raw text: a superset). All must be in the table."""
    kinds = {}

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str):
                    for n in NAME_RE.findall(k):
                        kinds.setdefault(n, set()).add("key")
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            for n in NAME_RE.findall(node):
                kinds.setdefault(n, set()).add("string")

    for d in docs or []:
        walk(d)
    lines = {}
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            for n in NAME_RE.findall(line):
                lines.setdefault(n, []).append(no)
                kinds.setdefault(n, set()).add("comment" if line.lstrip().startswith("#") else "text")
    unknown = sorted(n for n in kinds if n not in table)
    detail = ", ".join(f"{n} (line {', '.join(map(str, lines.get(n, ['?'])))})" for n in unknown)
    R.check(not unknown,
            f"{rel(path)}: its {len(kinds)} TOKENWATCH_* names are all in the settings table",
            "not in the table: " + detail)
    return kinds


# What a mounted secret file holds, for settings that read theirs at load.
SECRET_FILE_STAND_INS = {"TOKENWATCH_MONGO_URI_FILE": "mongodb://db:27017/?replicaSet=rs0\n",
                         "TOKENWATCH_SLACK_WEBHOOK_FILE": "https://hooks.example.invalid/stand-in\n",
                         "TOKENWATCH_REDIS_PASSWORD_FILE": "stand-in-password\n"}


def settings_parse(binary, env, label):
    """tokenwatch healthcheck with these settings: 2 is a configuration error."""
    port = free_port()
    full = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    full.update(env)
    with tempfile.TemporaryDirectory() as stand_ins:
        # Secret files exist only in the pod: stand-ins with the right shape.
        for name, content in SECRET_FILE_STAND_INS.items():
            if name in full:
                path = os.path.join(stand_ins, name)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(content)
                full[name] = path
        try:
            r = subprocess.run([binary, "healthcheck", "--metrics-addr", f"127.0.0.1:{port}"],
                               env=full, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            R.check(False, f"{label}: its settings parse", str(e))
            return
    unknown = [l for l in r.stderr.splitlines() if "unknown environment variable" in l]
    R.check(r.returncode in (0, 1) and not unknown,
            f"{label}: its {len(env)} settings are accepted "
            f"(tokenwatch healthcheck with them: exit {r.returncode}; 2 = configuration error)",
            " ".join(r.stderr.split()) or f"exit {r.returncode}")


# --------------------------------------------------------------------------
# Dockerfile

def dockerfile_instructions(path):
    """[(stage index, INSTRUCTION, arguments)] with continuations joined."""
    out, buf, stage = [], "", -1
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue
            if line.rstrip().endswith("\\"):
                buf += line.rstrip()[:-1] + " "
                continue
            full = (buf + line).strip()
            buf = ""
            if not full:
                continue
            ins, _, args = full.partition(" ")
            ins = ins.upper()
            if ins == "FROM":
                stage += 1
            out.append((stage, ins, args.strip()))
    return out


def exec_form(args):
    """JSON exec form ["a", "b"] as a list, else the shell words."""
    try:
        v = json.loads(args)
        if isinstance(v, list):
            return [str(x) for x in v]
    except ValueError:
        pass
    return args.split()


def check_dockerfile(path, table):
    image_env = {}
    if not R.check(os.path.isfile(path), f"{rel(path)} exists"):
        return image_env
    names_in(path, None, table)
    ins = dockerfile_instructions(path)
    froms = [(s, a) for s, i, a in ins if i == "FROM"]
    bases = [a.split()[0] for _, a in froms if a.split()]
    R.check(len(froms) >= 2 and bases[0] in ("debian:12", "debian:bookworm")
            and bases[-1] in ("debian:12-slim", "debian:bookworm-slim"),
            "Dockerfile: multi-stage, build on debian:12, runtime on debian:12-slim",
            f"stages: {bases}")
    if len(froms) < 2:
        return image_env
    last = froms[-1][0]
    build = [(i, a) for s, i, a in ins if s != last]
    runtime = [(i, a) for s, i, a in ins if s == last]

    build_run = " ".join(a for i, a in build if i == "RUN")
    missing = [p for p in BUILD_DEV_PACKAGES if not re.search(rf"(?<![\w.-]){re.escape(p)}(?![\w.-])", build_run)]
    R.check(not missing and "--no-install-recommends" in build_run,
            "Dockerfile: the build stage installs the -dev packages, compilers and pkg-config",
            f"missing: {missing}" if missing else "no --no-install-recommends")
    R.check(any(re.search(r"(^|[;&|]\s*)make(\s|$)", a) for i, a in build if i == "RUN"),
            "Dockerfile: the build stage runs make")
    sources = []
    for i, a in build:
        if i in ("COPY", "ADD"):
            parts = [w for w in exec_form(a) if not w.startswith("--")]
            sources += parts[:-1]
    bad = [s for s in sources if os.path.normpath(s) not in BUILD_COPY_ALLOWED]
    R.check(sources and not bad,
            "Dockerfile: the build stage copies only Makefile, src, include, scripts "
            "(no .dockerignore: never COPY . or docker/secrets)",
            f"also copies {bad}" if bad else "copies nothing")

    rt_run = " ".join(a for i, a in runtime if i == "RUN")
    R.check("--no-install-recommends" in rt_run and "rm -rf /var/lib/apt/lists" in rt_run,
            "Dockerfile: the runtime stage installs with --no-install-recommends and removes the apt lists")
    for i, a in runtime:
        if i != "ENV":
            continue
        parts = a.split(None, 1)
        if parts and "=" not in parts[0]:  # the old form: ENV KEY value
            image_env[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
            continue
        for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)', a):
            image_env[m.group(1)] = m.group(2).strip('"')
    user = [a for i, a in runtime if i == "USER"]
    uid = user[-1].split(":")[0] if user else "root"
    R.check(user and uid not in ("0", "root"),
            f"Dockerfile: the runtime stage runs as a non-root user (USER {user[-1] if user else 'unset'})")
    entry = [exec_form(a) for i, a in runtime if i == "ENTRYPOINT"]
    R.check(entry and entry[-1] and os.path.basename(entry[-1][0]) == "tokenwatch",
            "Dockerfile: ENTRYPOINT is tokenwatch", f"{entry[-1] if entry else 'none'}")
    cmd = [exec_form(a) for i, a in runtime if i == "CMD"]
    R.check(cmd and cmd[-1] == ["run"], "Dockerfile: default CMD is run", f"{cmd[-1] if cmd else 'none'}")
    copies = [a for i, a in runtime if i == "COPY" and "--from=" in a]
    R.check(any(a.rstrip().endswith("/usr/local/bin/tokenwatch") or a.rstrip().endswith("/usr/local/bin/")
                for a in copies),
            "Dockerfile: the binary is copied from the build stage to /usr/local/bin")
    expose = " ".join(a for i, a in runtime if i == "EXPOSE").split()
    R.check(any(e.split("/")[0] == str(METRICS_PORT) for e in expose),
            f"Dockerfile: EXPOSE {METRICS_PORT}", f"EXPOSE {expose}")
    host, port = split_addr(image_env.get("TOKENWATCH_METRICS_ADDR"))
    R.check(host in ("0.0.0.0", "::") and port == METRICS_PORT,
            f"Dockerfile: ENV TOKENWATCH_METRICS_ADDR=0.0.0.0:{METRICS_PORT} (probes from outside the container)",
            f"{image_env.get('TOKENWATCH_METRICS_ADDR')}")
    hc = [a for i, a in runtime if i == "HEALTHCHECK"]
    hc_cmd = exec_form(hc[-1].split("CMD", 1)[1].strip()) if hc and "CMD" in hc[-1] else []
    R.check(len(hc_cmd) >= 2 and os.path.basename(hc_cmd[0]) == "tokenwatch" and hc_cmd[1] == "healthcheck",
            "Dockerfile: HEALTHCHECK runs `tokenwatch healthcheck` (nothing the image lacks)",
            f"{hc[-1] if hc else 'none'}")
    return image_env


# --------------------------------------------------------------------------
# compose

def service_text(svc, docker_dir):
    """The command lines of a service plus the files it bind-mounts from
    the compose directory: to see what a service runs."""
    text = " ".join(words(svc.get("entrypoint")) + words(svc.get("command")))
    for v in as_list(svc.get("volumes")):
        src = v.get("source") if isinstance(v, dict) else str(v).split(":")[0]
        if src and src.startswith("."):
            p = os.path.join(docker_dir, src)
            if os.path.isfile(p):
                with open(p, encoding="utf-8", errors="replace") as f:
                    text += "\n" + f.read()
    return text


def compose_env(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            k, _, v = str(item).partition("=")
            out[k] = v
        return out
    return {k: env_text(v) for k, v in env.items()}


def depends_completed(svc, name):
    dep = svc.get("depends_on") or {}
    if isinstance(dep, list):
        return False
    return (dep.get(name) or {}).get("condition") == "service_completed_successfully"


def check_compose(path, docker_dir, dockerfile, image_env, table, binary):
    docs = load_yaml(path)
    if docs is None:
        return
    names_in(path, docs, table)
    if not R.check(len(docs) == 1 and isinstance(docs[0], dict) and isinstance(docs[0].get("services"), dict),
                   "compose: one document with services"):
        return
    doc = docs[0]
    services = doc["services"]

    def image(svc):
        return str(svc.get("image") or "")

    # mongo as a replica set
    mongo = [n for n, s in services.items()
             if image(s).startswith("mongo:") and "--replSet" in words(s.get("command"))]
    R.check(mongo, "compose: a mongo service started as a replica set (--replSet)",
            f"services: {list(services)}")
    rs_name = None
    if mongo:
        cmd = words(services[mongo[0]].get("command"))
        rs_name = cmd[cmd.index("--replSet") + 1] if cmd.index("--replSet") + 1 < len(cmd) else None

    # the one-shot init service
    init = [n for n, s in services.items()
            if image(s).startswith("mongo:") and "rs.initiate" in service_text(s, docker_dir)]
    R.check(init, "compose: a one-shot init service runs rs.initiate (mongosh)")
    if init:
        s = services[init[0]]
        text = service_text(s, docker_dir)
        R.check("mongosh" in text and re.search(r"\buntil\b|\bwhile\b|for \(", text),
                f"compose: {init[0]} uses mongosh and retries until the server answers")
        R.check(str(s.get("restart", "no")) == "no", f"compose: {init[0]} is not restarted (restart: \"no\")")

    # redis with AOF and a volume
    redis = [n for n, s in services.items() if image(s).startswith("redis:")
             and "redis-server" in words(s.get("command"))]
    R.check(redis, "compose: a redis service (redis-server)")
    if redis:
        s = services[redis[0]]
        cmd = words(s.get("command"))
        aof = "--appendonly" in cmd and cmd.index("--appendonly") + 1 < len(cmd) \
            and cmd[cmd.index("--appendonly") + 1] == "yes"
        R.check(aof, f"compose: {redis[0]} runs with --appendonly yes", f"command {cmd}")
        vols = [v.get("target") if isinstance(v, dict) else str(v).split(":")[1]
                for v in as_list(s.get("volumes")) if isinstance(v, dict) or ":" in str(v)]
        R.check("/data" in vols, f"compose: {redis[0]} keeps /data on a volume")

    # tokenwatch, built from the Dockerfile
    tw = [n for n, s in services.items()
          if isinstance(s.get("build"), dict) and os.path.basename(str(s["build"].get("dockerfile", ""))) == "Dockerfile"
          or image(s).startswith("tokenwatch")]
    if not R.check(len(tw) == 1, "compose: one tokenwatch service", f"found {tw}"):
        return
    twn, tws = tw[0], services[tw[0]]
    build = tws.get("build") or {}
    built = os.path.normpath(os.path.join(docker_dir, str(build.get("context", ".")),
                                          str(build.get("dockerfile", "Dockerfile"))))
    R.check(isinstance(build, dict) and built == os.path.normpath(dockerfile),
            f"compose: {twn} is built from {rel(dockerfile)} with the repository as context",
            f"builds {rel(built)}")
    env = dict(image_env)
    env.update(compose_env(tws))
    settings_parse(binary, env, f"compose: {twn}")
    R.check(env.get("TOKENWATCH_SINK") == "redis", f"compose: {twn} has TOKENWATCH_SINK=redis")
    for k in ("TOKENWATCH_NAME", "TOKENWATCH_DB", "TOKENWATCH_COLLECTION", "TOKENWATCH_ON_TOKEN_LOST"):
        R.check(env.get(k), f"compose: {twn} sets {k}")
    uri = env.get("TOKENWATCH_MONGO_URI", "")
    R.check(mongo and url_host(uri) and url_host(uri).split(":")[0] == mongo[0]
            and (rs_name is None or f"replicaSet={rs_name}" in uri),
            f"compose: {twn}'s TOKENWATCH_MONGO_URI names the {mongo[0] if mongo else 'mongo'} service and replica set {rs_name}",
            uri)
    R.check(redis and (url_host(env.get("TOKENWATCH_REDIS_URL")) or "").split(":")[0] == redis[0],
            f"compose: {twn}'s TOKENWATCH_REDIS_URL names the redis service", env.get("TOKENWATCH_REDIS_URL"))
    host, port = split_addr(env.get("TOKENWATCH_METRICS_ADDR"))
    R.check(host in ("0.0.0.0", "::") and port == METRICS_PORT,
            f"compose: {twn} listens for probes on 0.0.0.0:{METRICS_PORT}", env.get("TOKENWATCH_METRICS_ADDR"))
    if init:
        R.check(depends_completed(tws, init[0]),
                f"compose: {twn} waits for {init[0]} (condition: service_completed_successfully)")
    grace = duration_s(tws.get("stop_grace_period", "10s"))
    R.check(grace is not None and grace >= MIN_GRACE_S,
            f"compose: {twn} has stop_grace_period >= {MIN_GRACE_S}s for the last checkpoint",
            str(tws.get("stop_grace_period")))
    stream = env.get("TOKENWATCH_STREAM_KEY") or f"tokenwatch:{{{env.get('TOKENWATCH_NAME', 'default')}}}:events"

    # the consumer
    cons = [n for n, s in services.items() if n != twn
            and all(w in service_text(s, docker_dir) for w in ("XGROUP CREATE", "MKSTREAM", "XREADGROUP", "XACK"))]
    if R.check(cons, "compose: a consumer service with a consumer group (XGROUP CREATE ... MKSTREAM, XREADGROUP, XACK)"):
        cn, cs = cons[0], services[cons[0]]
        text = service_text(cs, docker_dir)
        R.check(re.search(r"XREADGROUP[^\n]*BLOCK", text) and re.search(r"XREADGROUP[^\n]*COUNT", text),
                f"compose: {cn} reads with XREADGROUP ... COUNT ... BLOCK")
        cenv = compose_env(cs)
        R.check(cenv.get("STREAM") == stream, f"compose: {cn} reads tokenwatch's stream {stream}",
                f"STREAM={cenv.get('STREAM')}")
        if init:
            R.check(depends_completed(cs, init[0]),
                    f"compose: {cn} waits for {init[0]} (condition: service_completed_successfully)")

    # bind-mounted helper files exist
    for n, s in services.items():
        for v in as_list(s.get("volumes")):
            src = v.get("source") if isinstance(v, dict) else str(v).split(":")[0]
            if src and src.startswith("."):
                R.check(os.path.exists(os.path.join(docker_dir, src)),
                        f"compose: {n} mounts {src}, which exists")

    # secrets as files
    secrets = doc.get("secrets") or {}
    R.check(secrets and all(isinstance(d, dict) and set(d) == {"file"} for d in secrets.values()),
            "compose: top-level secrets, each from a file", f"{secrets}")
    mounted = {}
    for item in as_list(tws.get("secrets")):
        if isinstance(item, dict):
            target = item.get("target") or item.get("source")
            mounted[target if target.startswith("/") else f"/run/secrets/{target}"] = item.get("source")
        else:
            mounted[f"/run/secrets/{item}"] = item
    R.check(WEBHOOK not in env, f"compose: no inline {WEBHOOK} (a secret)")
    wf = env.get(WEBHOOK_FILE)
    R.check(wf in mounted and mounted[wf] in secrets,
            f"compose: {WEBHOOK_FILE}={wf} is a secret mounted in {twn}", f"mounted: {list(mounted)}")
    pwf = env.get("TOKENWATCH_REDIS_PASSWORD_FILE")
    if pwf:
        R.check(pwf in mounted, f"compose: TOKENWATCH_REDIS_PASSWORD_FILE={pwf} is a mounted secret")
    git = in_git_worktree(docker_dir)
    for name, d in secrets.items():
        if not isinstance(d, dict) or "file" not in d:
            continue
        real = os.path.normpath(os.path.join(docker_dir, d["file"]))
        R.check(os.path.isfile(real + ".example"), f"compose: secret {name} has a committed template {rel(real)}.example")
        if git:
            R.check(git_ignored(real) and not git_ignored(real + ".example"),
                    f"compose: git ignores {rel(real)} and keeps {rel(real)}.example")


# --------------------------------------------------------------------------
# Kubernetes

def pod_spec(doc):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec") or {}


def is_tokenwatch(c):
    return "tokenwatch" in str(c.get("image", "")).split("/")[-1].split(":")[0]


def container_env(c, configmaps, secrets, image_env, where):
    """The settings a container gets: image ENV, then envFrom ConfigMaps,
    then env (secret values from the Secret template, if any)."""
    env = dict(image_env)
    for ef in as_list(c.get("envFrom")):
        ref = (ef.get("configMapRef") or {}).get("name")
        if ref is not None:
            R.check(ref in configmaps, f"{where}: envFrom ConfigMap {ref} is defined", f"ConfigMaps: {list(configmaps)}")
            env.update({k: env_text(v) for k, v in (configmaps.get(ref) or {}).items()})
        if ef.get("secretRef"):
            R.check(False, f"{where}: no envFrom secretRef (secrets as files or single keys)")
    for e in as_list(c.get("env")):
        name = e.get("name")
        if "value" in e:
            env[name] = env_text(e.get("value"))
        elif "valueFrom" in e:
            ref = e["valueFrom"].get("secretKeyRef") or e["valueFrom"].get("configMapKeyRef")
            if e["valueFrom"].get("secretKeyRef"):
                sname, key = ref.get("name"), ref.get("key")
                if secrets:
                    ok = key in (secrets.get(sname) or {})
                    R.check(ok, f"{where}: {name} from Secret {sname} key {key}, which the template has")
                    if ok:
                        env[name] = env_text(secrets[sname][key])
            elif e["valueFrom"].get("configMapKeyRef"):
                env[name] = env_text((configmaps.get(ref.get("name")) or {}).get(ref.get("key")))
    return env


def probe_port(probe, container):
    port = ((probe or {}).get("httpGet") or {}).get("port")
    if isinstance(port, str) and not port.isdigit():
        for p in as_list(container.get("ports")):
            if p.get("name") == port:
                return p.get("containerPort")
        return None
    return int(port) if port is not None else None


def check_security(spec, where):
    pod_sc = spec.get("securityContext") or {}
    for c in as_list(spec.get("containers")):
        sc = c.get("securityContext") or {}
        n = f"{where} container {c.get('name')}"
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        R.check(non_root and uid != 0, f"{n}: runAsNonRoot (uid {uid})")
        R.check(sc.get("readOnlyRootFilesystem") is True, f"{n}: readOnlyRootFilesystem")
        R.check("ALL" in as_list((sc.get("capabilities") or {}).get("drop")), f"{n}: drops ALL capabilities")
        R.check(sc.get("allowPrivilegeEscalation") is False, f"{n}: allowPrivilegeEscalation false")
        res = c.get("resources") or {}
        R.check((res.get("requests") or {}).get("memory") and (res.get("limits") or {}).get("memory")
                and (res.get("requests") or {}).get("cpu"),
                f"{n}: resources (cpu and memory requests, memory limit)")


def webhook_from_secret_file(spec, c, env, secrets, where):
    R.check(WEBHOOK not in env, f"{where}: no inline {WEBHOOK} (a secret)")
    wf = env.get(WEBHOOK_FILE)
    if not R.check(wf, f"{where}: {WEBHOOK_FILE} is set"):
        return
    volumes = {v.get("name"): v for v in as_list(spec.get("volumes"))}
    found = None
    for m in as_list(c.get("volumeMounts")):
        mp = str(m.get("mountPath", "")).rstrip("/")
        if wf.startswith(mp + "/"):
            vol = volumes.get(m.get("name")) or {}
            sec = vol.get("secret")
            sub = wf[len(mp) + 1:]
            if sec:
                items = as_list(sec.get("items"))
                if items:
                    keys = [i.get("key") for i in items if i.get("path") == sub]
                else:
                    keys = [sub]
                if keys:
                    found = (sec.get("secretName"), keys[0])
    ok = found is not None
    if ok and secrets:
        ok = found[1] in (secrets.get(found[0]) or {})
    R.check(ok, f"{where}: {WEBHOOK_FILE}={wf} is a file of a mounted Secret"
            + (f" ({found[0]} key {found[1]})" if found else ""))


def check_k8s(k8s_dir, image_env, table, binary):
    files = sorted(glob.glob(os.path.join(k8s_dir, "*.yaml")) + glob.glob(os.path.join(k8s_dir, "*.yml")))
    if not R.check(files, f"Kubernetes manifests in {rel(k8s_dir)}"):
        return
    docs = []
    for path in files:
        d = load_yaml(path)
        if d is None:
            continue
        names_in(path, d, table)
        for doc in d:
            ok = isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind") \
                and (doc.get("metadata") or {}).get("name")
            R.check(ok, f"{rel(path)}: {doc.get('kind') if isinstance(doc, dict) else '?'} "
                        f"{(doc.get('metadata') or {}).get('name') if isinstance(doc, dict) else ''} has apiVersion, kind, metadata.name")
            if ok:
                docs.append(doc)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind.get("ConfigMap", [])}
    for name, data in configmaps.items():
        bad = [k for k, v in data.items() if not isinstance(v, str)]
        R.check(not bad, f"ConfigMap {name}: every value is a string (kubectl requires it)", f"not strings: {bad}")
    secrets = {}
    for d in by_kind.get("Secret", []):
        data = dict(d.get("data") or {})
        data.update(d.get("stringData") or {})
        secrets[d["metadata"]["name"]] = data
    R.check(not any(d["metadata"]["name"] == "tokenwatch" for d in by_kind.get("Service", [])),
            "no Service named tokenwatch (its links would inject TOKENWATCH_SERVICE_HOST & co.)")

    # the Deployment
    deps = [d for d in by_kind.get("Deployment", []) if any(is_tokenwatch(c) for c in as_list(pod_spec(d).get("containers")))]
    dep_cms, dep_secret_refs = None, None
    if R.check(len(deps) == 1, "one Deployment with a tokenwatch container", f"found {len(deps)}"):
        d = deps[0]
        where = f"Deployment {d['metadata']['name']}"
        spec = d.get("spec") or {}
        ps = pod_spec(d)
        # One writer per --name is the lease's job (issue 11): two replicas and
        # a rolling update are safe, and a second replica is a standby.
        R.check(spec.get("replicas") == 2, f"{where}: replicas 2 (a leader and a standby)",
                f"{spec.get('replicas')}")
        strategy = spec.get("strategy") or {}
        R.check(strategy.get("type") == "RollingUpdate" and
                (strategy.get("rollingUpdate") or {}).get("maxUnavailable") == 0,
                f"{where}: strategy RollingUpdate, maxUnavailable 0 (a standby is always there)")
        R.check(ps.get("enableServiceLinks") is False, f"{where}: enableServiceLinks false")
        grace = ps.get("terminationGracePeriodSeconds", 30)
        R.check(isinstance(grace, int) and grace >= MIN_GRACE_S,
                f"{where}: terminationGracePeriodSeconds {grace} >= {MIN_GRACE_S} (the last checkpoint)")
        containers = as_list(ps.get("containers"))
        tws = [c for c in containers if is_tokenwatch(c)]
        others = [c for c in containers if not is_tokenwatch(c)]
        R.check(len(containers) == 2 and len(tws) == 1 and len(others) == 1,
                f"{where}: two containers, the consumer and the tokenwatch sidecar",
                f"{[c.get('name') for c in containers]}")
        check_security(ps, where)
        if tws:
            c = tws[0]
            cw = f"{where} container {c.get('name')}"
            R.check("run" in words(c.get("args")) + words(c.get("command")) or not c.get("args"),
                    f"{cw}: runs `tokenwatch run`")
            lp, rp = c.get("livenessProbe") or {}, c.get("readinessProbe") or {}
            R.check((lp.get("httpGet") or {}).get("path") == "/healthz" and probe_port(lp, c) == METRICS_PORT,
                    f"{cw}: livenessProbe httpGet /healthz on {METRICS_PORT}", f"{lp}")
            R.check((rp.get("httpGet") or {}).get("path") == "/readyz" and probe_port(rp, c) == METRICS_PORT,
                    f"{cw}: readinessProbe httpGet /readyz on {METRICS_PORT}", f"{rp}")
            R.check(any(p.get("containerPort") == METRICS_PORT for p in as_list(c.get("ports"))),
                    f"{cw}: declares containerPort {METRICS_PORT}")
            R.check(c.get("envFrom"), f"{cw}: settings from a ConfigMap (envFrom)")
            dep_cms = sorted((ef.get("configMapRef") or {}).get("name") for ef in as_list(c.get("envFrom")))
            dep_secret_refs = sorted(((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("key") or ""
                                     for e in as_list(c.get("env")) if (e.get("valueFrom") or {}).get("secretKeyRef"))
            env = container_env(c, configmaps, secrets, image_env, cw)
            settings_parse(binary, env, cw)
            host, port = split_addr(env.get("TOKENWATCH_METRICS_ADDR"))
            R.check(host in ("0.0.0.0", "::") and port == METRICS_PORT,
                    f"{cw}: TOKENWATCH_METRICS_ADDR listens on {METRICS_PORT} for the kubelet's probes",
                    env.get("TOKENWATCH_METRICS_ADDR"))
            webhook_from_secret_file(ps, c, env, secrets, cw)
            R.check(env.get("TOKENWATCH_SINK") == "redis" or not others,
                    f"{cw}: TOKENWATCH_SINK=redis, for the consumer beside it")
            stream = env.get("TOKENWATCH_STREAM_KEY") or f"tokenwatch:{{{env.get('TOKENWATCH_NAME', 'default')}}}:events"
            for o in others:
                oenv = {e.get("name"): e for e in as_list(o.get("env"))}
                if "STREAM" in oenv:
                    R.check(oenv["STREAM"].get("value") == stream,
                            f"{where} container {o.get('name')}: reads tokenwatch's stream {stream}",
                            f"STREAM={oenv['STREAM'].get('value')}")
                if "CONSUMER" in oenv:
                    R.check("value" in oenv["CONSUMER"],
                            f"{where} container {o.get('name')}: a fixed consumer name (a new pod re-reads what the old one left pending)",
                            f"{oenv['CONSUMER']}")

    # the CronJob
    crons = [d for d in by_kind.get("CronJob", []) if any(is_tokenwatch(c) for c in as_list(pod_spec(d).get("containers")))]
    if R.check(len(crons) == 1, "one CronJob with a tokenwatch container", f"found {len(crons)}"):
        d = crons[0]
        where = f"CronJob {d['metadata']['name']}"
        spec = d.get("spec") or {}
        ps = pod_spec(d)
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        R.check(str(spec.get("schedule")).split() == ["*/5", "*", "*", "*", "*"],
                f"{where}: every 5 minutes", f"{spec.get('schedule')}")
        R.check(spec.get("concurrencyPolicy") == "Forbid", f"{where}: concurrencyPolicy Forbid")
        R.check(ps.get("restartPolicy") in ("Never", "OnFailure"), f"{where}: restartPolicy Never or OnFailure")
        R.check(job.get("backoffLimit") == 0,
                f"{where}: backoffLimit 0 (exit 1/2/3 is the answer WARN/CRIT-or-LOST/UNKNOWN, not a flake)")
        R.check(ps.get("enableServiceLinks") is False, f"{where}: enableServiceLinks false")
        check_security(ps, where)
        c = [c for c in as_list(ps.get("containers")) if is_tokenwatch(c)][0]
        cw = f"{where} container {c.get('name')}"
        argv = words(c.get("command")) + words(c.get("args"))
        R.check("status" in argv and "run" not in argv, f"{cw}: runs `tokenwatch status`", f"{argv}")
        cms = sorted((ef.get("configMapRef") or {}).get("name") for ef in as_list(c.get("envFrom")))
        refs = sorted(((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("key") or ""
                      for e in as_list(c.get("env")) if (e.get("valueFrom") or {}).get("secretKeyRef"))
        if dep_cms is not None:
            R.check(cms == dep_cms and refs == dep_secret_refs,
                    f"{cw}: the same ConfigMap and Secret keys as the Deployment",
                    f"ConfigMaps {cms} vs {dep_cms}, secret keys {refs} vs {dep_secret_refs}")
        env = container_env(c, configmaps, secrets, image_env, cw)
        settings_parse(binary, env, cw)
        webhook_from_secret_file(ps, c, env, secrets, cw)


# --------------------------------------------------------------------------
# no secret inline

PLACEHOLDER_WORDS = ("CHANGE", "EXAMPLE", "PLACEHOLDER", "REDACTED", "YOUR", "XXXX", "PASSWORD", "SECRET", "TODO")


def looks_placeholder(s):
    core = s[1:] if s[:1] in ("T", "B") else s
    return len(set(core)) <= 1 or any(w in s.upper() for w in PLACEHOLDER_WORDS) \
        or s.startswith(("$", "<", "{"))


def secret_findings(text):
    found = []
    for m in re.finditer(r"hooks\.slack\.com/services/([A-Za-z0-9/_\-]*)", text):
        parts = m.group(1).split("/")
        if len(parts) >= 3 and re.fullmatch(r"T[A-Z0-9]{6,}", parts[0]) and re.fullmatch(r"B[A-Z0-9]{6,}", parts[1]) \
                and re.fullmatch(r"[A-Za-z0-9]{16,}", parts[2]) and not any(looks_placeholder(p) for p in parts[:3]):
            found.append(f"a Slack webhook with a real-looking path ({m.group(0)[:40]}...)")
    for m in re.finditer(r"\bxox[abprs]-[A-Za-z0-9-]{10,}", text):
        found.append(f"a Slack token ({m.group(0)[:9]}...)")
    for m in re.finditer(r"\b(mongodb(?:\+srv)?|rediss?)://([^:@/\s]*):([^@/\s]+)@", text):
        if not looks_placeholder(m.group(3)):
            found.append(f"a {m.group(1)} URL with a real-looking password (user {m.group(2)})")
    return found


def check_no_inline_secrets(docker_dir):
    scanned, findings = 0, []
    for root, _dirs, files in os.walk(docker_dir):
        for fn in sorted(files):
            path = os.path.join(root, fn)
            if os.path.basename(root) == "secrets" and not fn.endswith(".example") and fn != ".gitignore":
                R.note(f"skipped {rel(path)}: a real secret file (git-ignored, never committed)")
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            scanned += 1
            findings += [f"{rel(path)}: {x}" for x in secret_findings(text)]
    R.check(not findings, f"no secret inline in the {scanned} files under {rel(docker_dir)}", "; ".join(findings))


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary", nargs="?",
                    default=os.environ.get("TW_BINARY") or os.path.join(REPO, "build", "tokenwatch"),
                    help="tokenwatch binary (default: $TW_BINARY or build/tokenwatch)")
    ap.add_argument("--docker-dir", default=os.path.join(REPO, "docker"),
                    help="directory with Dockerfile, compose.yaml, k8s/ (default: docker/)")
    args = ap.parse_args()
    docker_dir = os.path.abspath(args.docker_dir)
    binary = os.path.abspath(args.binary)

    table = settings_names(binary)
    if table is None:
        print("check_manifests: FAIL: no settings table (build tokenwatch first: make)")
        return 1
    dockerfile = os.path.join(docker_dir, "Dockerfile")
    image_env = check_dockerfile(dockerfile, table)
    compose = os.path.join(docker_dir, "compose.yaml")
    if R.check(os.path.isfile(compose), f"{rel(compose)} exists"):
        check_compose(compose, docker_dir, dockerfile, image_env, table, binary)
    check_k8s(os.path.join(docker_dir, "k8s"), image_env, table, binary)
    check_no_inline_secrets(docker_dir)

    print()
    if R.failed:
        print(f"check_manifests: FAIL: {len(R.failed)} of {R.checks} checks failed:")
        for f in R.failed:
            print(f"  - {f}")
        return 1
    print(f"check_manifests: OK: {R.checks} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
