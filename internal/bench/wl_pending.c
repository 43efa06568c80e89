/* Temporary: workloads whose modules are still being written. */
#include "bench/bench.h"

int bench_wl_wal(const struct bench_opts *o, struct bench_result *r, struct trine_err *err)
{
    (void)o;
    (void)r;
    return err_set(err, -TRINE_EUNSUPPORTED, "workload wal: not built yet");
}
int bench_wl_apply(const struct bench_opts *o, struct bench_result *r, struct trine_err *err)
{
    (void)o;
    (void)r;
    return err_set(err, -TRINE_EUNSUPPORTED, "workload apply: not built yet");
}
int bench_wl_snapshot(const struct bench_opts *o, struct bench_result *r, struct trine_err *err)
{
    (void)o;
    (void)r;
    return err_set(err, -TRINE_EUNSUPPORTED, "workload snapshot: not built yet");
}
int bench_wl_recovery(const struct bench_opts *o, struct bench_result *r, struct trine_err *err)
{
    (void)o;
    (void)r;
    return err_set(err, -TRINE_EUNSUPPORTED, "workload recovery: not built yet");
}
