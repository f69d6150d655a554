"""Where a QA.GET hit's server time goes.

With `perf` (preferred): `perf record --call-graph dwarf` on the running redis-server while
redis-benchmark sends hits with pipeline 16, then every sample of the main thread is attributed
by its call stack. Without a working perf: `valgrind --tool=callgrind` on a second redis-server
that serves a fixed number of hits, attributed by inclusive instruction counts.

Used by bench.py; `run(...)` returns {"md": markdown section, "summary": one line}.
"""

import os
import re
import subprocess
import time

FRAME_RE = re.compile(r"^\s*[0-9a-f]+\s+(.*?)\s+\(([^()]*)\)\s*$")

# Inside the handler: the first frame below `redis_qa::commands::get::get` (walking from the
# root) that matches decides the part. Order of the list only matters for the label text.
PARTS = [
    (re.compile(r"^RM_OpenKey$"), "RM_OpenKey: key lookup (dict find, expiry check)"),
    (re.compile(r"^RM_HashGet$"), "RM_HashGet: read the entry's hash field(s), each copied into a new string"),
    (re.compile(r"^RM_ReplyWithString$"), "RM_ReplyWithString: write the reply"),
    (re.compile(r"^RM_CreateString$"), "RM_CreateString: key name object"),
    (re.compile(r"^RM_(FreeString|CloseKey)$"), "RM_FreeString / RM_CloseKey"),
    (re.compile(r"normaliz"), "question normalization (redis_qa::normalize, unicode_normalization)"),
    (re.compile(r"^(sha2::|digest::|redis_qa::keys::|<sha2|<digest)"), "key derivation: SHA-256 + hex (redis_qa::keys, sha2)"),
    (re.compile(r"(get::parse|from_utf8|validate_cache_name|question_str|run_utf8_validation)"), "argument parsing, UTF-8 check"),
    (re.compile(r"(pthread_mutex|futex|Mutex|config::strings|MutexGuard)"), "config mutex (config::strings)"),
    (re.compile(r"^RM_"), "other RedisModule_* calls"),
]
# Inside normalization, leaf first: the innermost frame that matches decides.
NORM_PARTS = [
    (re.compile(r"(Decompositions|decompos|fully_decomposed)"), "NFKC decomposition"),
    (re.compile(r"(Recompositions|compose|composition)"), "NFKC recomposition"),
    (re.compile(r"(to_lower|ToLowercase)"), "lowercasing"),
    (re.compile(r"(fold_quote|is_invisible)"), "quote folding, invisible characters"),
    (re.compile(r"(push_words|end_word|String>::push|is_whitespace|is_sentence_punct)"),
     "splitting into words, trimming punctuation"),
    (re.compile(r"is_ascii"), "ASCII check"),
]
ALLOC_RE = re.compile(
    r"^(malloc|free|calloc|realloc|zmalloc|zfree|zcalloc|zrealloc|ztrymalloc\w*|ztryrealloc\w*|"
    r"zmalloc\w*|zfree\w*|malloc_usable_size|je_\w+|__rust_alloc|__rust_dealloc|__rust_realloc|"
    r"__rdl_\w+|_rjem_\w+|RM_Alloc|RM_Free|RM_Realloc|RM_Calloc|"
    r"<redis_module::alloc::RedisAlloc as core::alloc::global::GlobalAlloc>::\w+)$")


def _register_pid(work, pid):
    with open(os.path.join(work, "extra.pids"), "a") as f:
        f.write(f"{pid}\n")


def _perf_works(work):
    try:
        p = subprocess.run(["perf", "record", "-q", "-o", os.path.join(work, "perf-probe.data"),
                            "--", "true"], capture_output=True, timeout=30)
        return p.returncode == 0
    except Exception:
        return False


def _callgrind_available():
    try:
        return subprocess.run(["valgrind", "--version"], capture_output=True, timeout=10).returncode == 0
    except Exception:
        return False


def parse_perf_script(text, main_tid):
    """Returns a list of call stacks (root first) of the main thread; frames are symbol names."""
    stacks = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if not lines or not lines[0].strip():
            continue
        head = lines[0].split()
        if not head or not head[0].isdigit() or int(head[0]) != main_tid:
            continue
        frames = []
        for l in lines[1:]:
            m = FRAME_RE.match(l)
            if m:
                frames.append(m.group(1))
        if frames:
            stacks.append(frames[::-1])
    return stacks


def strip_closure(name):
    return re.sub(r"(::\{\{closure\}\})+$", "", name or "")


def classify(stacks):
    top = {}
    parts = {}
    norm_parts = {}
    callees = {}
    n_disp = n_handler = n_alloc_disp = 0
    for st in stacks:
        names = st
        if "RedisModuleCommandDispatcher" in names:
            where = "QA.GET command (RedisModuleCommandDispatcher = commandstats time)"
            n_disp += 1
            leaf = names[-1]
            if ALLOC_RE.match(leaf):
                n_alloc_disp += 1
            i = names.index("RedisModuleCommandDispatcher")
            below = names[i + 1:]
            if "redis_qa::commands::get::get" in below:
                n_handler += 1
                j = below.index("redis_qa::commands::get::get")
                under = below[j + 1:]
                part = None
                for fr in under:
                    hit = next((label for rx, label in PARTS if rx.search(fr)), None)
                    if hit:
                        part = hit
                        break
                if part is None:
                    # Module code of its own: named by the deepest module function on the way down.
                    name = None
                    for fr in under:
                        if fr.startswith("redis_qa::"):
                            name = fr
                        elif name and not fr.startswith(("core::", "alloc::", "std::", "<")):
                            break
                    part = (f"module code: {strip_closure(name)}" if name
                            else "module code: redis_qa::commands::get::get itself")
                # Inclusive time per module function or RedisModule_* call directly below `get`.
                callee = next((strip_closure(fr) for fr in under
                               if fr.startswith("redis_qa::") or fr.startswith("RM_")),
                              "redis_qa::commands::get::get itself")
                callees[callee] = callees.get(callee, 0) + 1
                if part.startswith("question normalization"):
                    sub = "other"
                    for fr in reversed(below[j + 1:]):
                        m = next((label for rx, label in NORM_PARTS if rx.search(fr)), None)
                        if m:
                            sub = m
                            break
                    norm_parts[sub] = norm_parts.get(sub, 0) + 1
            elif "redis_qa::commands::get::qa_get" in below:
                n_handler += 1
                part = "handler entry: panic guard, argument slices, thread-local scratch"
                for fr in below:
                    hit = next((label for rx, label in PARTS if rx.search(fr)), None)
                    if hit:
                        part = hit
                        break
            elif any(f.startswith("moduleCreateContext") for f in below):
                part = "Redis dispatcher: moduleCreateContext"
            elif any(f.startswith("moduleFreeContext") for f in below):
                part = "Redis dispatcher: moduleFreeContext (auto-memory, pool)"
            else:
                part = "Redis dispatcher: other"
            parts[part] = parts.get(part, 0) + 1
        elif "call" in names:
            where = "call() around the command (timing, stats, propagation)"
        elif "processCommand" in names:
            where = "processCommand (command lookup, ACL, checks)"
        elif any(f in ("readQueryFromClient", "processInputBuffer") for f in names):
            where = "reading and parsing requests (read syscalls, RESP parsing)"
        elif any(f in ("writeToClient", "_writeToClient", "handleClientsWithPendingWrites") for f in names):
            where = "writing replies (write syscalls)"
        else:
            where = "event loop and the rest"
        top[where] = top.get(where, 0) + 1
    return {"top": top, "parts": parts, "norm_parts": norm_parts, "callees": callees, "n": len(stacks), "n_disp": n_disp,
            "n_handler": n_handler, "n_alloc_disp": n_alloc_disp}


def profile_perf(c, a, cache, question, log):
    work = a.work
    data = os.path.join(work, "perf.data")
    bench = subprocess.Popen(["redis-benchmark", "-h", "127.0.0.1", "-p", str(c.port), "-c", "50",
                              "-n", "20000000", "-P", "16", "-q", "QA.GET", cache, question],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.7)
        c.r.config_resetstat()
        rec = subprocess.run(["perf", "record", "-q", "-F", "1999", "--call-graph", "dwarf,16384",
                              "-t", str(a.redis_pid), "-o", data, "--", "sleep", "3"],
                             capture_output=True, text=True, timeout=90)
        cs = c.r.info("commandstats").get("cmdstat_qa.get", {})
    finally:
        bench.terminate()
        try:
            bench.wait(10)
        except subprocess.TimeoutExpired:
            bench.kill()
            bench.wait()
    if rec.returncode != 0:
        raise RuntimeError("perf record failed: " + rec.stderr[-300:])
    script = subprocess.run(["perf", "script", "-i", data, "-F", "tid,ip,sym,dso"],
                            capture_output=True, text=True, timeout=300)
    try:
        os.remove(data)
    except OSError:
        pass
    stacks = parse_perf_script(script.stdout, a.redis_pid)
    if len(stacks) < 500:
        raise RuntimeError(f"perf gave only {len(stacks)} main-thread samples")
    r = classify(stacks)
    r["usec_per_call_profiled"] = float(cs.get("usec_per_call", "nan"))
    r["tool"] = "perf"
    return r


def profile_callgrind(c, a, cache, question, log, hits=30000):
    """A second redis-server under callgrind serving `hits` hits; attribution by inclusive Ir."""
    import socket
    import redis

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    out = os.path.join(a.work, "callgrind.out")
    server_cpu = os.environ.get("SERVER_CPU", "0")
    proc = subprocess.Popen(
        ["taskset", "-c", server_cpu, "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--loadmodule", a.module, "--qa.backend-url", f"http://127.0.0.1:{a.backend_100}/v1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _register_pid(a.work, proc.pid)
    try:
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=60)
        for _ in range(600):
            try:
                r.ping()
                break
            except Exception:
                time.sleep(0.1)
        r.execute_command("QA.GET", cache, question)
        key = r.keys(f"qa:{{{cache}}}:" + "?" * 32)[0]
        r.execute_command("QA.SET", cache, question, "x" * 500)
        subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "10", "-n", str(hits),
                        "-P", "16", "-q", "QA.GET", cache, question], capture_output=True, timeout=300)
        cs = r.info("commandstats").get("cmdstat_qa.get", {})
        try:
            r.shutdown(nosave=True)
        except Exception:
            pass
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out],
                         capture_output=True, text=True, timeout=120).stdout
    incl = {}
    for line in ann.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(?:\S*?:)?(.+?)(?:\s+\[.*\])?\s*$", line)
        if m:
            name = m.group(2).strip()
            incl[name] = max(incl.get(name, 0), int(m.group(1).replace(",", "")))
    total = max(incl.values()) if incl else 0
    disp = incl.get("RedisModuleCommandDispatcher", 0)
    if not disp:
        raise RuntimeError("callgrind output has no RedisModuleCommandDispatcher")

    def find(pattern):
        return sum(v for k, v in incl.items() if re.search(pattern, k))

    parts = {
        "RM_OpenKey: key lookup (dict find, expiry check)": find(r"^RM_OpenKey$"),
        "RM_HashGet: read the entry's hash field(s), each copied into a new string": find(r"^RM_HashGet$"),
        "RM_ReplyWithString: write the reply": find(r"^RM_ReplyWithString$"),
        "RM_CreateString: key name object": find(r"^RM_CreateString$"),
        "RM_FreeString / RM_CloseKey": find(r"^RM_(FreeString|CloseKey)$"),
        "question normalization (redis_qa::normalize, unicode_normalization)": find(r"^redis_qa::normalize::normalize_into$"),
        "key derivation: SHA-256 + hex (redis_qa::keys, sha2)": find(r"^redis_qa::keys::entry_key_into$"),
        "Redis dispatcher: moduleCreateContext": find(r"^moduleCreateContext$"),
        "Redis dispatcher: moduleFreeContext (auto-memory, pool)": find(r"^moduleFreeContext$"),
    }
    rest = disp - sum(parts.values())
    parts["everything else in the command (module code, parsing, guards)"] = max(rest, 0)
    return {"tool": "callgrind", "top": {"QA.GET command (RedisModuleCommandDispatcher = commandstats time)": disp,
                                         "everything else in the server": total - disp},
            "parts": parts, "n": total, "n_disp": disp, "n_handler": incl.get("redis_qa::commands::get::qa_get", 0),
            "n_alloc_disp": None, "usec_per_call_profiled": float(cs.get("usec_per_call", "nan"))}


def run(c, a, cache, question, us, log, anomaly, question2=None, us2=None):
    mode = os.environ.get("PROFILER", "auto")
    r = None
    why = ""
    if mode == "none":
        return {"md": "## Where a hit's time goes\n\nSkipped (PROFILER=none).\n", "summary": ""}
    if mode in ("auto", "perf"):
        if _perf_works(a.work):
            log("profile: perf record on the hit path (pipeline 16)")
            try:
                r = profile_perf(c, a, cache, question, log)
            except Exception as e:
                why = f"perf failed ({e}); "
                log("profile: " + why)
        else:
            why = "perf record does not work here; "
    if r is None and mode in ("auto", "callgrind"):
        if _callgrind_available():
            log("profile: callgrind on a second redis-server")
            try:
                r = profile_callgrind(c, a, cache, question, log)
            except Exception as e:
                why += f"callgrind failed ({e})"
        else:
            why += "valgrind is not installed"
    if r is None:
        return {"md": f"## Where a hit's time goes\n\nNo profile: {why}.\n", "summary": ""}
    md = render(r, us, question, why)
    if r["tool"] == "perf" and question2 and us2:
        log("profile: perf record on the hit path, non-ASCII question")
        try:
            r2 = profile_perf(c, a, cache, question2, log)
            md += render_second(r2, us2, question2)
        except Exception as e:
            md += f"\n(The non-ASCII question could not be profiled: {e}.)\n"
    return {"md": md, "summary": r.get("line", ""), "raw": r}


def parts_table(r, qa_us):
    disp = r["n_disp"]
    out = ["| part | share of the command | ≈ µs per hit |", "|---|---|---|"]
    for k, v in sorted(r["parts"].items(), key=lambda kv: -kv[1]):
        share = v / disp
        out.append(f"| {k} | {100 * share:.1f}% | {share * qa_us:.3f} |")
    out.append(f"| **total** | 100% | **{qa_us:.2f}** |")
    out.append("")
    return out


def render_second(r, qa_us, question):
    out = ["", f"The same for the non-ASCII question `{question}` ({r['n']:,} samples; "
           f"{qa_us:.2f} µs per hit in section 1), which takes the NFKC path of the normalization:\n"]
    out += parts_table(r, qa_us)
    norm = r["parts"].get("question normalization (redis_qa::normalize, unicode_normalization)", 0) / r["n_disp"]
    np_ = r.get("norm_parts") or {}
    tot = sum(np_.values())
    split = ", ".join(f"{k} {100 * v / tot:.0f}%" for k, v in sorted(np_.items(), key=lambda kv: -kv[1])) if tot else ""
    out.append(f"Normalization is {100 * norm:.0f}% of this hit (≈ {norm * qa_us:.2f} µs)"
               + (f"; within it, by innermost matching frame (approximate: the iterator chain is inlined into one loop): {split}." if split else ".") + "\n")
    return "\n".join(out)


def render(r, us, question, why):
    qa_us = us[0] if us else r["usec_per_call_profiled"]
    get_us = us[1] if us else None
    unit = "samples" if r["tool"] == "perf" else "instructions (Ir)"
    out = ["## Where a hit's time goes\n"]
    if r["tool"] == "perf":
        out.append(
            f"{why}`perf record -F 1999 --call-graph dwarf -t <redis-server main thread>` for 3 s while "
            f"`redis-benchmark -c 50 -P 16 QA.GET {cache_q(question)}` sends hits (same 500-byte entry as "
            f"above); {r['n']:,} samples of the server's main thread, each attributed by its call "
            "stack (bench/profile_hit.py). µs per hit = share of the command's samples × the QA.GET "
            + (f"server µs/call measured without the profiler in section 1 ({qa_us:.2f} µs; "
               f"{r['usec_per_call_profiled']:.2f} µs while profiled).\n" if us else
               f"server µs/call measured while profiled ({qa_us:.2f} µs).\n"))
    else:
        out.append(
            f"{why}`valgrind --tool=callgrind` on a second redis-server serving a fixed number of "
            "hits (pipeline 16); inclusive instruction counts per function (bench/profile_hit.py). "
            f"µs per hit = share of the command's instructions × {qa_us:.2f} µs "
            + ("(section 1)" if us else "(measured under valgrind, so far slower than native)")
            + ". Instruction counts are not time: SHA-256 in particular may run a portable "
            "implementation under valgrind instead of the CPU's SHA instructions, so its share is "
            "overstated.\n")
    tot = r["n"]
    out.append("Whole server main thread under this load:\n")
    out.append(f"| where | share of {unit} |")
    out.append("|---|---|")
    for k, v in sorted(r["top"].items(), key=lambda kv: -kv[1]):
        out.append(f"| {k} | {100.0 * v / tot:.1f}% |")
    out.append("")
    disp = r["n_disp"]
    out.append("Inside one QA.GET hit (100% = the command's own time, which is what `usec_per_call` measures):\n")
    out += parts_table(r, qa_us)
    if r.get("callees"):
        out.append("The same samples by what `redis_qa::commands::get::get` calls directly (inclusive; "
                   "the module's own structure):\n")
        out.append("| called from get | share of the command | ≈ µs per hit |")
        out.append("|---|---|---|")
        for k, v in sorted(r["callees"].items(), key=lambda kv: -kv[1]):
            if v / disp >= 0.005:
                out.append(f"| `{k}` | {100 * v / disp:.1f}% | {v / disp * qa_us:.3f} |")
        out.append("")
    if r.get("n_alloc_disp") is not None:
        a_share = r["n_alloc_disp"] / disp
        out.append(f"Across those parts, samples whose innermost frame is the allocator (zmalloc/zfree, "
                   f"jemalloc, malloc_usable_size, the Rust allocator shim): {100 * a_share:.1f}% of the "
                   f"command (≈ {a_share * qa_us:.3f} µs per hit).\n")
    parts = dict(r["parts"])
    norm = parts.get("question normalization (redis_qa::normalize, unicode_normalization)", 0) / disp
    sha = parts.get("key derivation: SHA-256 + hex (redis_qa::keys, sha2)", 0) / disp
    rm = sum(v for k, v in parts.items() if k.startswith("RM_") or k.startswith("other RedisModule")) / disp
    dsp = sum(v for k, v in parts.items() if k.startswith("Redis dispatcher")) / disp
    lines = [
        f"Reading it: Redis module API calls (open key, hash field reads with their copies, reply, string "
        f"create/free) take {100 * rm:.0f}% of a hit, the module dispatcher's context set-up and "
        f"tear-down {100 * dsp:.0f}%, SHA-256 key derivation {100 * sha:.0f}% and normalization "
        f"{100 * norm:.0f}% (ASCII fast path; a non-ASCII question goes through NFKC, see the "
        "non-ASCII row in section 1)."]
    if get_us is not None:
        lines.append(f" For comparison a whole GET of the same value costs {get_us:.2f} µs of server time.")
    out.append("".join(lines) + "\n")
    r["line"] = (f"Profile ({r['tool']}): of a hit's {qa_us:.2f} µs, RedisModule_* calls "
                 f"{100 * rm:.0f}%, dispatcher context {100 * dsp:.0f}%, SHA-256 {100 * sha:.0f}%, "
                 f"normalization {100 * norm:.0f}%.")
    return "\n".join(out)


def cache_q(q):
    return f'bench "{q}"'
