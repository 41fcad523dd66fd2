#!/usr/bin/env python3
"""The tables of bench/profile, from its run directories.

    profile_report.py --commits N [--connections C] [--top K]
                      [--strace N_FILE 2N_FILE] N_DIR 2N_DIR [N_DIR 2N_DIR ...]

Each directory holds one callgrind run (--separate-threads=yes:
callgrind.out.PID-TT per thread), threads.txt (the thread names in valgrind's
numbering) and batches (stoat_batch_transactions_count at the end). A pair
(N commits, 2N commits) is one round; its per-commit figures are the
differences divided by N.
"""

import argparse
import glob
import os
import re
import statistics
import subprocess

# Thread name (from /proc, at most 15 characters) to stage, in table order.
STAGES = [
    ("reactor (HTTP, commit parse)", lambda name: name.startswith("stoat-reactor")),
    ("stage 1 sequence", lambda name: name == "stoat-sequence"),
    ("stage 2 persist", lambda name: name == "stoat-persist"),
    ("stage 2 disk IO threads", lambda name: name.startswith("stoat-disk")),
    ("stage 3 reply", lambda name: name == "stoat-reply"),
    ("other (main, retention, history)", lambda name: True),
]

ALLOCATOR = "(glibc malloc/free/realloc, self)"
LINE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+([^:]*):(.*?)(?: \[[^\]]*\])?$")


def stage_of(name):
    for stage, matches in STAGES:
        if matches(name):
            return stage
    raise AssertionError(name)


def thread_files(directory):
    files = {}
    for path in glob.glob(os.path.join(directory, "callgrind.out.*-*")):
        files[int(path.rsplit("-", 1)[1])] = path
    return files


def thread_names(directory, count):
    with open(os.path.join(directory, "threads.txt")) as file:
        names = [line.strip() for line in file if line.strip()]
    if len(names) != count:
        # A thread that ended before the names were read would shift them.
        print("warning: %s: %d thread names for %d callgrind files; threads unnamed"
              % (directory, len(names), count))
        return {number: "thread-%d" % number for number in range(1, count + 1)}
    names[0] = "main"  # valgrind names the main thread after itself
    return {number: names[number - 1] for number in range(1, count + 1)}


def annotate(path, inclusive):
    """Instructions per function from callgrind_annotate, and the allocator's share.

    Lines are per (file, function): code inlined from another file is listed
    under its caller's name with that file. Self costs add up over the files
    of a function; inclusive costs do not (each line counts the calls made
    from it), so the largest is taken. Self cost in glibc's malloc.c is also
    summed under ALLOCATOR.
    """
    output = subprocess.run(["callgrind_annotate", "--inclusive=" + ("yes" if inclusive else "no"), "--auto=no",
                             "--threshold=100", path], check=True, capture_output=True, text=True).stdout
    costs = {}
    listing = False
    for line in output.splitlines():
        if "file:function" in line:
            listing = True
            continue
        if listing and not line.strip():
            break
        match = LINE.match(line) if listing else None
        if match:
            cost, source, function = int(match.group(1).replace(",", "")), match.group(2), match.group(3)
            if inclusive:
                costs[function] = max(costs.get(function, 0), cost)
            else:
                costs[function] = costs.get(function, 0) + cost
                if source.endswith("malloc/malloc.c"):
                    costs[ALLOCATOR] = costs.get(ALLOCATOR, 0) + cost
    return costs


def total(path):
    with open(path) as file:
        for line in file:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    return 0


def load(directory):
    """(instructions per stage, self and inclusive cost per stage and function, batches)"""
    files = thread_files(directory)
    names = thread_names(directory, len(files))
    stages, functions, inclusive = {}, {}, {}
    for number, path in files.items():
        stage = stage_of(names[number])
        stages[stage] = stages.get(stage, 0) + total(path)
        for costs, is_inclusive in ((functions, False), (inclusive, True)):
            per_function = costs.setdefault(stage, {})
            for function, cost in annotate(path, is_inclusive).items():
                per_function[function] = per_function.get(function, 0) + cost
    with open(os.path.join(directory, "batches")) as file:
        batches = float(file.read().strip() or 0)
    return stages, functions, inclusive, batches


def strace_calls(path):
    calls = {}
    with open(path) as file:
        for line in file:
            fields = line.split()
            if len(fields) >= 5 and re.match(r"^[\d.]+$", fields[0]) and fields[-1] != "total":
                calls[fields[-1]] = int(fields[3])
    return calls


def short(function):
    return function if len(function) <= 100 else function[:97] + "..."


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--strace", nargs=2)
    parser.add_argument("dirs", nargs="+")
    args = parser.parse_args()
    n = args.commits
    rounds = []
    for n_dir, n2_dir in zip(args.dirs[0::2], args.dirs[1::2]):
        a, b = load(n_dir), load(n2_dir)
        per_stage = {stage: (b[0].get(stage, 0) - a[0].get(stage, 0)) / n for stage, _ in STAGES}
        fixed = {stage: 2 * a[0].get(stage, 0) - b[0].get(stage, 0) for stage, _ in STAGES}
        functions, inclusive = {}, {}
        for stage, _ in STAGES:
            for index, out in ((1, functions), (2, inclusive)):
                before, after = a[index].get(stage, {}), b[index].get(stage, {})
                out[stage] = {f: (after.get(f, 0) - before.get(f, 0)) / n for f in set(before) | set(after)}
        batches = b[3] - a[3]
        rounds.append({"per_stage": per_stage, "total": sum(per_stage.values()), "fixed": sum(fixed.values()),
                       "functions": functions, "inclusive": inclusive,
                       "commits_per_batch": n / batches if batches else 0})
    totals = [r["total"] for r in rounds]
    chosen = sorted(rounds, key=lambda r: r["total"])[(len(rounds) - 1) // 2]

    print()
    print("Instructions per commit (callgrind Ir, user space), %d vs %d commits, %d connections"
          % (n, 2 * n, args.connections))
    print("%-34s %14s %8s %14s" % ("stage (threads)", "instr/commit", "share", "of which malloc"))
    allocator_total = 0
    for stage, _ in STAGES:
        value = chosen["per_stage"][stage]
        allocator = max(0, chosen["functions"][stage].get(ALLOCATOR, 0))
        allocator_total += allocator
        print("%-34s %14s %7.1f%% %14s" % (stage, "{:,.0f}".format(value), 100 * value / chosen["total"],
                                          "{:,.0f}".format(allocator)))
    print("%-34s %14s %7.1f%% %14s" % ("total", "{:,.0f}".format(chosen["total"]), 100.0,
                                      "{:,.0f}".format(allocator_total)))
    print("fixed cost, estimated (start-up, connections, shutdown; absorbs run-to-run noise): %s instructions"
          % "{:,.0f}".format(chosen["fixed"]))
    print("commits per batch (marginal): %.1f" % chosen["commits_per_batch"])
    if len(rounds) > 1:
        print("rounds, total instr/commit: %s (median %s, spread %.1f%%)" % (
            ", ".join("{:,.0f}".format(t) for t in totals), "{:,.0f}".format(statistics.median(totals)),
            100 * (max(totals) - min(totals)) / statistics.median(totals)))
        print("rounds, commits per batch: %s" % ", ".join("%.1f" % r["commits_per_batch"] for r in rounds))

    print()
    print("Top functions per stage, instructions per commit: self (inlined code counted in its caller),")
    print("then Stoat's own functions inclusive (callees counted; the thread's loop left out)")
    for stage, _ in STAGES:
        stage_total = chosen["per_stage"][stage]
        print("%s (%s per commit)" % (stage, "{:,.0f}".format(stage_total)))
        ranked = sorted(((f, v) for f, v in chosen["functions"][stage].items() if f != ALLOCATOR and v >= 0.5),
                        key=lambda item: -item[1])[:args.top]
        for function, value in ranked:
            print("  self %10s  %s" % ("{:,.0f}".format(value), short(function)))
        own = [(f, v) for f, v in chosen["inclusive"][stage].items()
               if ("stoat::" in f or "stoat_http::" in f) and 0.5 <= v < 0.9 * stage_total]
        for function, value in sorted(own, key=lambda item: -item[1])[:args.top]:
            print("  incl %10s  %s" % ("{:,.0f}".format(value), short(function)))

    if args.strace:
        a, b = strace_calls(args.strace[0]), strace_calls(args.strace[1])
        with open(args.strace[0] + ".batches") as file:
            batches_a = float(file.read().strip() or 0)
        with open(args.strace[1] + ".batches") as file:
            batches_b = float(file.read().strip() or 0)
        per_call = {name: (b.get(name, 0) - a.get(name, 0)) / n for name in set(a) | set(b)}
        print()
        print("Syscalls per commit (strace -f -c, without valgrind; commits per batch %.1f)"
              % (n / (batches_b - batches_a) if batches_b > batches_a else 0))
        print("%-20s %10s" % ("syscall", "per commit"))
        for name, value in sorted(per_call.items(), key=lambda item: -item[1]):
            if value >= 0.005:
                print("%-20s %10.2f" % (name, value))
        print("%-20s %10.2f" % ("total", sum(per_call.values())))


if __name__ == "__main__":
    main()
