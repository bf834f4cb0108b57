#pragma once
// Pure: the model card's fields that a checkpoint itself tells (docs/model-card.md lists them all): what the
// model is, which iteration, how many samples and tokens it had seen, the learning-rate schedule and the data,
// from the saved Megatron args and the written config.json.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "hub/model_card.hpp"

namespace m2h::hub {

struct CardSource {
    nlohmann::json args;        // the checkpoint's Megatron args
    nlohmann::json config;      // the config.json written
    std::int64_t iteration = 0;
    std::string checkpoint;     // the iteration folder
    std::string checkpoint_format;
    std::string model_name;     // the output folder's name
    std::uint64_t parameters = 0;
    std::string manifest;       // the manifest's summary
    std::string version;        // megatron2hf's
};

CardFields card_fields(const CardSource& source);

// "1.31B"
std::string short_count(std::uint64_t n);
// "1,310,720,000 (1.31B)"
std::string count_text(std::uint64_t n);

}  // namespace m2h::hub
