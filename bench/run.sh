#!/usr/bin/env bash
# gapsync benchmark harness (issue 5). Prints one table of ratios measured in
# the same run on this machine. Not part of the test suite (too long); the
# suite runs `bench/run.sh --smoke` with tiny sizes so the script cannot rot.
#
#   bench/run.sh                 # full run (2 GiB content-heavy, 100k metadata, 1/8 GiB memory, 0.5-4 GiB scaling)
#   bench/run.sh --smoke         # tiny sizes, seconds
#   RUNS=5 CONTENT=4G bench/run.sh
#
# Environment: RUNS (repetitions per figure, median reported; default 3),
# CONTENT (content-heavy size, default 2G), META_UPDATES (default 100000),
# MEM_SIZES (default "1G 8G"), SCALE_SIZES (default "512M 1G 2G 4G"),
# WORK (scratch folder, default /tmp/gapsync-bench), GAPSYNC_BIN (binary to
# use instead of building release), DROP_CACHES=1 to drop the page cache
# before each timed command (root only).
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; fi
if [ "$SMOKE" = 1 ]; then
    RUNS=${RUNS:-1}; CONTENT=${CONTENT:-8M}; META_UPDATES=${META_UPDATES:-2000}
    MEM_SIZES=${MEM_SIZES:-"4M 16M"}; SCALE_SIZES=${SCALE_SIZES:-"4M 8M"}; CHANGE=${CHANGE:-50}
else
    RUNS=${RUNS:-3}; CONTENT=${CONTENT:-2G}; META_UPDATES=${META_UPDATES:-100000}
    MEM_SIZES=${MEM_SIZES:-"1G 8G"}; SCALE_SIZES=${SCALE_SIZES:-"512M 1G 2G 4G"}; CHANGE=${CHANGE:-1000}
fi
WORK=${WORK:-/tmp/gapsync-bench}
DROP_CACHES=${DROP_CACHES:-0}

for tool in minisign zstd sha256sum openssl tar /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required (apt-get install minisign zstd openssl time)" >&2; exit 1; }
done

if [ -z "${GAPSYNC_BIN:-}" ]; then
    cargo build --release --quiet
    GAPSYNC_BIN=$PWD/target/release/gapsync
fi
G="$GAPSYNC_BIN"

rm -rf "$WORK"; mkdir -p "$WORK"
LOG="$WORK/log"; : > "$LOG"

drop() { if [ "$DROP_CACHES" = 1 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi; }

# timed CMD...: runs once, appends "seconds rss_kib" to $WORK/t
timed() {
    drop
    /usr/bin/time -f "%e %M" -o "$WORK/t1" "$@" >>"$LOG" 2>&1 || { echo "bench: failed: $*" >&2; tail -20 "$LOG" >&2; exit 1; }
    cat "$WORK/t1" >> "$WORK/t"
}

# median of the first column of $WORK/t (and max of the second), then reset
median() {
    sort -n "$WORK/t" | awk '{a[NR]=$1; if ($2>m) m=$2} END {printf "%.3f %d\n", a[int((NR+1)/2)], m}'
    : > "$WORK/t"
}

bytes() { numfmt --from=iec "$1"; }
files_for() { echo $(( $(bytes "$1") / (4*1024*1024) + 1 )); }
# updates so that there are enough leaves for the files (leaves ~ 0.71 N)
updates_for() { local f; f=$(files_for "$1"); echo $(( f * 2 + 100 )); }

# store DIR SIZE [UPDATES]: a connected store with SIZE of content
make_store() {
    "$G" init "$1" --name bench-up >>"$LOG"
    "$G" --server "$1" -q catalog generate --updates "${3:-$(updates_for "$2")}" --content-bytes "$2" --seed 1 >>"$LOG"
}

"$G" key generate --out "$WORK/k" >>"$LOG"
minisign -G -W -p "$WORK/mk.pub" -s "$WORK/mk.key" >>"$LOG" 2>&1

declare -A R
: > "$WORK/t"

# ---------------------------------------------------------------- 1. content-heavy
S="$WORK/up"; make_store "$S" "$CONTENT"
for i in $(seq "$RUNS"); do rm -rf "$WORK/b"; "$G" --server "$S" export --full --key "$WORK/k.key" --out "$WORK/b" --to "bench$i" -q >/dev/null; done; rm -rf "$WORK/b"
for i in $(seq "$RUNS"); do rm -rf "$WORK/b"; timed "$G" --server "$S" -q export --full --key "$WORK/k.key" --out "$WORK/b" --to "x$i"; done; R[export]=$(median)
for i in $(seq "$RUNS"); do rm -rf "$WORK/cp"; timed bash -c "cp -r $S/content $WORK/cp && sync"; done; R[cp]=$(median); rm -rf "$WORK/cp"
script_export() {
    cd "$1" && tar -cf - content | zstd -q -T0 -1 > "$WORK/x.tar.zst" && sha256sum "$WORK/x.tar.zst" > "$WORK/SUMS" && minisign -S -s "$WORK/mk.key" -m "$WORK/SUMS" >/dev/null && sync
}
export -f script_export; export WORK
for i in $(seq "$RUNS"); do rm -f "$WORK/x.tar.zst"; timed bash -c "script_export $S"; done; R[script_export]=$(median)
BYTES=$(du -sb "$WORK/b" | cut -f1)
for i in $(seq "$RUNS"); do timed "$G" -q verify "$WORK/b" --trust "$WORK/k.pub"; done; R[verify]=$(median)
# one openssl process over every file of the bundle: one core
for i in $(seq "$RUNS"); do timed bash -c "cd $WORK/b && find . -type f -print0 | xargs -0 openssl dgst -sha256 > /dev/null"; done; R[openssl]=$(median)
for i in $(seq "$RUNS"); do
    rm -rf "$WORK/down"; "$G" init "$WORK/down" --name down --mode replica >>"$LOG"; "$G" --server "$WORK/down" trust add "$WORK/k.pub" >>"$LOG"
    timed "$G" --server "$WORK/down" -q import "$WORK/b"
done; R[import]=$(median)
script_import() {
    rm -rf "$WORK/xdir" && mkdir -p "$WORK/xdir" && cd "$WORK" && minisign -V -q -p "$WORK/mk.pub" -m SUMS && sha256sum -c --quiet SUMS && zstd -q -d < "$WORK/x.tar.zst" | tar -x -C "$WORK/xdir" && sync
}
export -f script_import
for i in $(seq "$RUNS"); do timed bash -c script_import; done; R[script_import]=$(median)
rm -rf "$WORK/down" "$WORK/xdir" "$WORK/x.tar.zst" "$WORK/b" "$S"

# ---------------------------------------------------------------- 2. metadata-heavy
M="$WORK/meta"; "$G" init "$M" --name meta >>"$LOG"
"$G" --server "$M" -q catalog generate --updates "$META_UPDATES" --seed 1 >>"$LOG"
REVS=$("$G" --server "$M" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["revisions"])')
"$G" --server "$M" groups add Pilot >>"$LOG"
for i in $(seq "$RUNS"); do rm -rf "$WORK/mb"; timed "$G" --server "$M" -q export --full --key "$WORK/k.key" --out "$WORK/mb" --to "m$i"; done; R[meta_export]=$(median)
for i in $(seq "$RUNS"); do
    rm -rf "$WORK/md"; "$G" init "$WORK/md" --name md --mode replica >>"$LOG"; "$G" --server "$WORK/md" trust add "$WORK/k.pub" >>"$LOG"
    timed "$G" --server "$WORK/md" -q import "$WORK/mb"
done; R[meta_import]=$(median)
# chain "inc" for the incremental: full bundle to it first, imported into md2
rm -rf "$WORK/mb" "$WORK/md"
"$G" --server "$M" -q export --full --key "$WORK/k.key" --out "$WORK/mb" --to inc >>"$LOG"
"$G" init "$WORK/md" --name md --mode replica >>"$LOG"; "$G" --server "$WORK/md" trust add "$WORK/k.pub" >>"$LOG"
"$G" --server "$WORK/md" -q import "$WORK/mb" >>"$LOG"
# CHANGE changes: new revisions (about 95%) and approvals (5%)
"$G" --server "$M" -q catalog generate --updates $(( CHANGE * 95 / 100 * 100 / 105 )) --seed 2 >>"$LOG"
"$G" --server "$M" updates list --json --kind software | python3 -c '
import json,sys
for u in [u for u in json.load(sys.stdin) if not u["title"].startswith("HIDDEN")][:int(sys.argv[1])]: print(u["id"])' $(( CHANGE / 20 )) |
    while read -r id; do "$G" --server "$M" approve "$id" --group Pilot >>"$LOG"; done
timed "$G" --server "$M" -q export --key "$WORK/k.key" --out "$WORK/mi" --to inc; R[inc_export]=$(median)
INC_REVS=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["counts"]["revisions"], m["counts"]["deployments"])' "$WORK/mi/manifest.json")
timed "$G" --server "$WORK/md" -q import "$WORK/mi"; R[inc_import]=$(median)
rm -rf "$M" "$WORK/mb" "$WORK/md" "$WORK/mi"

# ---------------------------------------------------------------- 3. memory and 4. scaling
declare -A EXP IMP CP
SIZES=$(echo "$MEM_SIZES $SCALE_SIZES" | tr ' ' '\n' | sort -u -h)
# The same number of updates at every size (enough for the largest), so
# only the content grows.
FIXED_UPDATES=$(updates_for "$(echo "$SIZES" | tail -1)")
for size in $SIZES; do
    S="$WORK/s-$size"; make_store "$S" "$size" "$FIXED_UPDATES"
    timed bash -c "cp -r $S/content $WORK/cp && sync"; CP[$size]=$(median); rm -rf "$WORK/cp"
    timed "$G" --server "$S" -q export --full --key "$WORK/k.key" --out "$WORK/sb" --to s; EXP[$size]=$(median)
    "$G" init "$WORK/sd" --name sd --mode replica >>"$LOG"; "$G" --server "$WORK/sd" trust add "$WORK/k.pub" >>"$LOG"
    timed "$G" --server "$WORK/sd" -q import "$WORK/sb"; IMP[$size]=$(median)
    rm -rf "$S" "$WORK/sb" "$WORK/sd"
done

# ---------------------------------------------------------------- report
t() { echo "${1%% *}"; }
rss() { echo $(( ${1##* } / 1024 )); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", b / 1e6 / s; else print "n/a" }'; }

echo
echo "gapsync benchmark — $(date -u +%FT%TZ) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), median of $RUNS run(s)$( [ "$SMOKE" = 1 ] && echo ', SMOKE sizes')"
echo "workloads: content-heavy $CONTENT in ~$(files_for "$CONTENT") files; metadata-heavy $REVS revisions, +$INC_REVS (revisions, deployments) change; memory/scaling stores: $FIXED_UPDATES updates each; drop caches: $DROP_CACHES"
echo "load average (1, 5, 15 min) at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shows here)"
echo "every compared command ends when its data is on disk (gapsync fsyncs; cp and the scripts are followed by sync)"
echo
printf "%-46s %10s %10s %8s %8s\n" "measure" "gapsync s" "other s" "ratio" "goal"
printf "%-46s %10s %10s %8s %8s\n" "export --full / cp -r content" "$(t "${R[export]}")" "$(t "${R[cp]}")" "$(ratio "$(t "${R[export]}")" "$(t "${R[cp]}")")" "<= 1.15"
printf "%-46s %10s %10s %8s %8s\n" "export --full / tar|zstd|sha256sum|minisign" "$(t "${R[export]}")" "$(t "${R[script_export]}")" "$(ratio "$(t "${R[export]}")" "$(t "${R[script_export]}")")" "<= 0.6"
printf "%-46s %10s %10s %8s %8s\n" "import / cp -r content" "$(t "${R[import]}")" "$(t "${R[cp]}")" "$(ratio "$(t "${R[import]}")" "$(t "${R[cp]}")")" "<= 1.5"
printf "%-46s %10s %10s %8s %8s\n" "import / minisign -V, sha256sum -c, unzstd|tar" "$(t "${R[import]}")" "$(t "${R[script_import]}")" "$(ratio "$(t "${R[import]}")" "$(t "${R[script_import]}")")" "<= 0.6"
CORES=$(nproc)
printf "%-46s %10s %10s %8s %8s\n" "verify throughput / openssl dgst -sha256 x $CORES cores" "$(t "${R[verify]}")" "$(t "${R[openssl]}")" "$(ratio "$(t "${R[openssl]}")" "$(awk -v v="$(t "${R[verify]}")" -v c="$CORES" 'BEGIN { print v * c }')")" ">= 0.8"
echo
echo "content-heavy throughput: export $(mbps "$BYTES" "$(t "${R[export]}")") MB/s, import $(mbps "$BYTES" "$(t "${R[import]}")") MB/s, verify $(mbps "$BYTES" "$(t "${R[verify]}")") MB/s; peak RSS export $(rss "${R[export]}") MiB, import $(rss "${R[import]}") MiB"
echo
printf "%-46s %10s %8s\n" "metadata-heavy ($REVS revisions)" "seconds" "goal"
printf "%-46s %10s %8s\n" "full export" "$(t "${R[meta_export]}")" "<= 10"
printf "%-46s %10s %8s\n" "full import" "$(t "${R[meta_import]}")" "<= 20"
printf "%-46s %10s %8s\n" "incremental export ($INC_REVS)" "$(t "${R[inc_export]}")" "<= 1"
printf "%-46s %10s %8s\n" "incremental import" "$(t "${R[inc_import]}")" "<= 1"
echo
printf "%-10s %8s %9s %9s %10s %10s %14s %14s\n" "content" "cp s" "export s" "import s" "export/cp" "import/cp" "export RSS MiB" "import RSS MiB"
for size in $(echo "$MEM_SIZES $SCALE_SIZES" | tr ' ' '\n' | sort -u -h); do
    printf "%-10s %8s %9s %9s %10s %10s %14s %14s\n" "$size" "$(t "${CP[$size]}")" "$(t "${EXP[$size]}")" "$(t "${IMP[$size]}")" \
        "$(ratio "$(t "${EXP[$size]}")" "$(t "${CP[$size]}")")" "$(ratio "$(t "${IMP[$size]}")" "$(t "${CP[$size]}")")" "$(rss "${EXP[$size]}")" "$(rss "${IMP[$size]}")"
done
rm -rf "$WORK"
