#pragma once
// `megatron2hf-launch status` and `megatron2hf-launch clean`.
#include "settings.hpp"

namespace m2h::launch {

// Prints every (log, iteration) known from the state file and, when logs are given, from disk, with its state
// (--format table or json), and warns about leftover staging folders.
int run_status(const Settings& s);

// Removes the staging folders killed conversions left, except where a queued or running task may use one.
int run_clean(const Settings& s);

}  // namespace m2h::launch
