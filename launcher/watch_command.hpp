#pragma once
// `megatron2hf-launch watch`: a launch every --interval until the watched training runs have ended and their
// checkpoints are converted, in the foreground or (--as-slurm-job) as a small SLURM job that resubmits itself.
#include "settings.hpp"

namespace m2h::launch {

int run_watch(const Settings& s);

}  // namespace m2h::launch
