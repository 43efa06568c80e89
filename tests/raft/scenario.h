/*
 * scenario.h - runs a text scenario (a .txt file of tests/raft/scenarios) against a
 * manual-mode simulated cluster, with the invariant checker on after every
 * command and every delivered message. The language is described at the top
 * of scenario.c.
 */
#ifndef TRINE_TESTS_RAFT_SCENARIO_H
#define TRINE_TESTS_RAFT_SCENARIO_H

#include <stddef.h>
#include <stdio.h>

/* Runs the scenario in file path. Returns 0, or -1 with a message (file:line: what) in err.
 * When trace is not NULL every command and event is written to it. */
int scenario_run_file(const char *path, FILE *trace, char *err, size_t err_len);

#endif
