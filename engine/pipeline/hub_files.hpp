#pragma once
// What makes a converted folder ready to publish, written by rank 0 into the staging folder: the run's tokenizer
// (unless --assets brings one: the assets win), config.json with the tokenizer's special-token ids,
// generation_config.json, and after the manifest the model card (README.md).
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "pipeline/convert_options.hpp"

namespace m2h::pipeline {

// Writes the tokenizer, assets, config.json and generation_config.json into `dir`; returns the config written.
// A tokenizer the args name but that cannot be found is a warning, not an error.
nlohmann::json write_folder_files(const ConvertOptions& options, const nlohmann::json& args, nlohmann::json config,
                                  const std::string& dir);

struct CardFacts {
    nlohmann::json args;
    nlohmann::json config;
    std::int64_t iteration = 0;
    std::string checkpoint, checkpoint_format;
    std::uint64_t parameters = 0;
    std::string manifest;  // the manifest's summary
};

// README.md from --model-card (or the default template) unless --no-model-card.
void write_model_card(const ConvertOptions& options, const CardFacts& facts, const std::string& dir);

}  // namespace m2h::pipeline
