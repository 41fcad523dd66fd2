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


def self_costs(path):
    """Self instructions per function (inlined code folded into its caller)."""
    output = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", path],
                            check=True, capture_output=True, text=True).stdout
    costs = {}
    listing = False
    for line in output.splitlines():
        if "file:function" in line:
            listing = True
            continue
        match = LINE.match(line) if listing else None
        if listing and not line.strip():
            break
        if match:
            function = match.group(3)
            costs[function] = costs.get(function, 0) + int(match.group(1).replace(",", ""))
    return costs


def total(path):
    with open(path) as file:
        for line in file:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    return 0


def load(directory):
    """(instructions per stage, self cost per stage and function, batches)"""
    files = thread_files(directory)
    names = thread_names(directory, len(files))
    stages, functions = {}, {}
    for number, path in files.items():
        stage = stage_of(names[number])
        stages[stage] = stages.get(stage, 0) + total(path)
        per_function = functions.setdefault(stage, {})
        for function, cost in self_costs(path).items():
            per_function[function] = per_function.get(function, 0) + cost
    with open(os.path.join(directory, "batches")) as file:
        batches = float(file.read().strip() or 0)
    return stages, functions, batches


def strace_calls(path):
    calls = {}
    with open(path) as file:
        for line in file:
            fields = line.split()
            if len(fields) >= 5 and re.match(r"^[\d.]+$", fields[0]) and fields[-1] != "total":
                calls[fields[-1]] = int(fields[3])
    return calls


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument("--strace", nargs=2)
    parser.add_argument("dirs", nargs="+")
    args = parser.parse_args()
    n = args.commits
    rounds = []
    for short, long in zip(args.dirs[0::2], args.dirs[1::2]):
        a, b = load(short), load(long)
        per_stage = {stage: (b[0].get(stage, 0) - a[0].get(stage, 0)) / n for stage, _ in STAGES}
        fixed = {stage: 2 * a[0].get(stage, 0) - b[0].get(stage, 0) for stage, _ in STAGES}
        functions = {}
        for stage, _ in STAGES:
            before, after = a[1].get(stage, {}), b[1].get(stage, {})
            functions[stage] = {f: (after.get(f, 0) - before.get(f, 0)) / n for f in set(before) | set(after)}
        batches = b[2] - a[2]
        rounds.append({"per_stage": per_stage, "total": sum(per_stage.values()), "fixed": sum(fixed.values()),
                       "functions": functions, "commits_per_batch": n / batches if batches else 0})
    totals = [r["total"] for r in rounds]
    chosen = sorted(rounds, key=lambda r: r["total"])[(len(rounds) - 1) // 2]

    print()
    print("Instructions per commit (callgrind Ir, user space), %d vs %d commits, %d connections"
          % (n, 2 * n, args.connections))
    print("%-34s %14s %8s" % ("stage (threads)", "instr/commit", "share"))
    for stage, _ in STAGES:
        value = chosen["per_stage"][stage]
        print("%-34s %14s %7.1f%%" % (stage, "{:,.0f}".format(value), 100 * value / chosen["total"]))
    print("%-34s %14s %7.1f%%" % ("total", "{:,.0f}".format(chosen["total"]), 100.0))
    print("fixed cost (start-up, connections, shutdown): %s instructions" % "{:,.0f}".format(chosen["fixed"]))
    print("commits per batch (marginal): %.1f" % chosen["commits_per_batch"])
    if len(rounds) > 1:
        print("rounds, total instr/commit: %s (median %s, spread %.1f%%)" % (
            ", ".join("{:,.0f}".format(t) for t in totals), "{:,.0f}".format(statistics.median(totals)),
            100 * (max(totals) - min(totals)) / statistics.median(totals)))
        print("rounds, commits per batch: %s" % ", ".join("%.1f" % r["commits_per_batch"] for r in rounds))

    print()
    print("Top functions per stage (self instructions per commit, inlined code counted in its caller)")
    for stage, _ in STAGES:
        ranked = sorted(chosen["functions"][stage].items(), key=lambda item: -item[1])[:args.top]
        print("%s (%s per commit)" % (stage, "{:,.0f}".format(chosen["per_stage"][stage])))
        for function, value in ranked:
            if len(function) > 100:
                function = function[:97] + "..."
            print("  %10s  %s" % ("{:,.0f}".format(value), function))

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
