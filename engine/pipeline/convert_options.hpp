#pragma once
// What the command line asks of a conversion.
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/dtype.hpp"
#include "plan/transfer_plan.hpp"

namespace m2h::pipeline {

struct ConvertOptions {
    std::string input;
    std::string output;
    std::string iteration = "latest";
    std::string arch = "auto";
    std::optional<DType> dtype;                      // nullopt: source
    std::uint64_t max_shard_size = 5'000'000'000ull;
    std::uint64_t memory_budget = 1ull << 30;        // per rank, for round buffers
    std::uint64_t max_read_rate = 0;                 // per rank, source bytes per second; 0: no limit
    plan::Readers readers = plan::Readers::writers;  // who reads each source byte (plan/transfer_plan.hpp)
    std::string assets;
    std::optional<std::uint64_t> num_key_value_heads;
    std::optional<std::uint64_t> vocab_size;
    bool overwrite = false;
    bool verify = false;  // re-read every written file and check it against the manifest before committing
    bool fsync = true;    // fsync the output files and folder before the rename, and the parent folder after it
    std::string format = "safetensors";              // or "hdf5" (docs/hdf5.md): `output` is then an .h5 file
    std::string group;                               // hdf5: the group to write; empty: iter_NNNNNNN
    std::optional<int> zstd_level;                   // hdf5: compress datasets with zstd at this level
    bool model_card = true;                          // safetensors: write README.md (hub/model_card.hpp)
    std::string model_card_template;                 // its template's text; empty: the default
    std::map<std::string, std::string> model_card_fields;  // --model-card-field NAME=VALUE, over the derived ones
};

}  // namespace m2h::pipeline
