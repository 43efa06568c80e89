/*
 * main_scenarios.c - raft_scenarios: one cmocka test per text scenario in
 * tests/raft/scenarios/ (each named after the dissertation figure or section
 * it exercises). The directory is $TRINE_SCENARIOS, else tests/raft/scenarios
 * under the working directory, else relative to the binary
 * (build/<flavour>/tests/ -> ../../../tests/raft/scenarios).
 *
 *   raft_scenarios                  run them all
 *   raft_scenarios FILE... [--trace] run some, printing the trace
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdbool.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "scenario.h"

#define SCENARIOS_MAX 64

static bool g_trace;

static void run_scenario(void **state)
{
    const char *path = *state;
    static char err[16384];
    int rc = scenario_run_file(path, g_trace ? stdout : NULL, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "%s\n", err); /* cmocka truncates long messages */
        fail_msg("%s failed", path);
    }
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static const char *find_dir(const char *argv0, char *buf, size_t n)
{
    const char *env = getenv("TRINE_SCENARIOS");
    if (env && is_dir(env)) return env;
    if (is_dir("tests/raft/scenarios")) return "tests/raft/scenarios";
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", argv0);
    snprintf(buf, n, "%s/../../../tests/raft/scenarios", dirname(tmp));
    return is_dir(buf) ? buf : NULL;
}

int main(int argc, char **argv)
{
    static char *files[SCENARIOS_MAX];
    static struct CMUnitTest tests[SCENARIOS_MAX];
    size_t n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--trace"))
            g_trace = true;
        else if (n < SCENARIOS_MAX)
            files[n++] = strdup(argv[i]);
    }
    if (n == 0) {
        char buf[4096];
        const char *dir = find_dir(argv[0], buf, sizeof(buf));
        DIR *d = dir ? opendir(dir) : NULL;
        if (!d) {
            fprintf(stderr, "raft_scenarios: no scenario directory (set TRINE_SCENARIOS)\n");
            return 1;
        }
        struct dirent *de;
        while ((de = readdir(d)) && n < SCENARIOS_MAX) {
            size_t l = strlen(de->d_name);
            if (l < 5 || strcmp(de->d_name + l - 4, ".txt")) continue;
            char p[8192];
            snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
            files[n++] = strdup(p);
        }
        closedir(d);
        qsort(files, n, sizeof(files[0]), by_name);
    }
    if (n == 0) {
        fprintf(stderr, "raft_scenarios: no scenarios found\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        char *base = strrchr(files[i], '/');
        tests[i] = (struct CMUnitTest){.name = base ? base + 1 : files[i],
                                       .test_func = run_scenario,
                                       .initial_state = files[i]};
    }
    int rc = _cmocka_run_group_tests("raft_scenarios", tests, n, NULL, NULL);
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    return rc;
}
