#pragma once
// The globals a checkpoint pickle may name. Nothing named is ever imported or called either way; the list
// exists so that a file naming a code path (os.system, builtins.eval, subprocess.Popen, ...) is refused
// outright instead of being carried along as inert data.
#include "pickle/value.hpp"

namespace m2h::pickle {

// `c` is normalised (builtins, copyreg, pathlib, numpy.core spellings).
bool is_allowed_global(const ClassRef& c);

}  // namespace m2h::pickle
