"""The same closed-loop load through wrk, where it is installed (--loadgen wrk).

A Lua script builds the bodies exactly as bench/loadgen.py does: the same
text, the same recipients in the same order. wrk has no warm-up, so a short
run with other recipients precedes the measured one.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from bench.loadgen import TEXT
from bench.procs import HOST, BenchError, run_json

_SCRIPT = """
local n = -1
local first = %(first)d
local width = %(width)d
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local function recipient(i)
  local kind = i %% 3
  if kind == 0 then
    return string.format('{"messenger":"telegram","id":"%%d"}', 1000000000 + i)
  elseif kind == 1 then
    return string.format('{"messenger":"whatsapp","id":"+4470%%08d"}', i)
  end
  return string.format('{"messenger":"viber","id":"bench-%%d"}', i)
end

request = function()
  n = n + 1
  local parts = {}
  local base = (first + n) * width
  for i = 0, width - 1 do
    parts[#parts + 1] = recipient(base + i)
  end
  local body = '{"text":"%(text)s","recipients":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format(nil, "/v1/messages", nil, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%%d,"duration_us":%%d,"socket_errors":%%d,"non2xx":%%d,' ..
    '"p50":%%f,"p90":%%f,"p99":%%f,"max":%%f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""

# Warm-up requests are numbered from here, far above any measured request.
_WARMUP_FIRST = 10**8


def available() -> bool:
    """Return whether wrk is on PATH."""
    return shutil.which("wrk") is not None


def _script(workdir: Path, body: str, first: int) -> Path:
    width = 1 if body == "single" else int(body.partition(":")[2])
    path = workdir / f"wrk-{first}.lua"
    path.write_text(_SCRIPT % {"first": first, "width": width, "text": TEXT})
    return path


def run(
    port: int,
    body: str,
    workdir: Path,
    *,
    connections: int,
    warmup_s: float,
    duration_s: float,
    cpu: int | None,
) -> dict[str, Any]:
    """Warm up, then measure with one wrk thread; return loadgen.py's summary keys."""
    if not available():
        raise BenchError("--loadgen wrk needs wrk on PATH (apt-get install wrk)")
    url = f"http://{HOST}:{port}/"
    for first, seconds in ((_WARMUP_FIRST, warmup_s), (0, duration_s)):
        whole = max(1, math.ceil(seconds))
        command = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{whole}s",
            "-s",
            str(_script(workdir, body, first)),
            url,
        ]
        raw = _last_json(command, workdir, cpu, whole + 30)
    seconds = raw["duration_us"] / 1e6
    accepted = raw["requests"] - raw["non2xx"]
    return {
        "generator": "wrk",
        "connections": connections,
        "seconds": seconds,
        "requests": raw["requests"],
        "accepted": accepted,
        "rate": accepted / seconds,
        "statuses": {"non2xx": raw["non2xx"]},
        "errors": raw["socket_errors"],
        "latency_ms": {k: raw[k] / 1000 for k in ("p50", "p90", "p99", "max")},
    }


def _last_json(
    command: list[str], workdir: Path, cpu: int | None, timeout_s: float
) -> dict[str, Any]:
    # run_json reads the last line of stdout, where done() writes its object.
    try:
        return run_json(command, cwd=workdir, cpu=cpu, timeout_s=timeout_s)
    except json.JSONDecodeError as exc:
        raise BenchError(f"wrk printed no summary: {exc}") from exc
