/* bench.h - `sidecast bench`: a load generator for the edge and its peers (docs/CLI.md,
 * docs/BENCHMARKS.md). Runs one mode with its own command line; returns an exit code. */
#ifndef SC_CLI_BENCH_H
#define SC_CLI_BENCH_H

/* argv[0] is the mode (connect, idle, fanout, publish, tokens, --help). */
int cli_bench(int argc, char **argv);

#endif
