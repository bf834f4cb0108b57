#pragma once
// The modeling, configuration and tokenizer files copied into every output from an Open-Sci-hf checkout.
#include <string>

namespace m2h::launch {

// The files the original workflow copied from <open_sci_hf_path>/sample/, staged once per content into
// <convert_logs_dir>/assets-<hash>/; returns that folder. With `dry_run` it is named but not created.
std::string stage_assets(const std::string& open_sci_hf_path, const std::string& convert_logs_dir, bool dry_run);

}  // namespace m2h::launch
