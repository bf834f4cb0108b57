#include "pipeline/hub_files.hpp"

#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/error.hpp"
#include "hub/card_fields.hpp"
#include "hub/generation_config.hpp"
#include "hub/model_card.hpp"
#include "hub/special_tokens.hpp"
#include "hub/tokenizer_lookup.hpp"
#include "io/file.hpp"

namespace m2h::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string read_if_present(const fs::path& path) {
    return io::path_exists(path.string()) ? io::read_text_file(path.string()) : std::string();
}

void copy_into(const fs::path& from, const std::string& dir) {
    std::error_code ec;
    fs::copy_file(from, fs::path(dir) / from.filename(), fs::copy_options::overwrite_existing, ec);
    if (ec) throw Error(from.string(), "cannot copy into the output: " + ec.message());
}

// The args' tokenizer, unless --assets brings one (its files would replace these anyway).
void copy_tokenizer(const json& args, const std::string& assets, const std::string& dir) {
    if (!assets.empty() && !hub::tokenizer_files(assets).empty()) {
        spdlog::debug("tokenizer: from --assets, the args' one not looked for");
        return;
    }
    const auto found = hub::find_tokenizer(args, hub::tokenizer_environment());
    if (found.named.empty()) {
        spdlog::debug("tokenizer: the args name no Hugging Face tokenizer");
        return;
    }
    if (found.folder.empty()) {
        std::string places;
        for (const auto& p : found.looked_in) places += (places.empty() ? "" : ", ") + p;
        spdlog::warn("tokenizer '{}' named by the checkpoint's args was not found (looked in: {}); the output has no "
                     "tokenizer (--assets can give one)", found.named, places.empty() ? "no Hugging Face cache" : places);
        return;
    }
    for (const auto& f : hub::tokenizer_files(found.folder)) copy_into(f, dir);
    spdlog::info("tokenizer: '{}' from {}", found.named, found.folder);
}

void copy_assets(const std::string& assets, const std::string& dir) {
    if (assets.empty()) return;
    std::error_code ec;
    if (!fs::is_directory(assets, ec)) throw Error(assets, "--assets is not a folder");
    for (const auto& e : fs::directory_iterator(assets)) {
        if (!e.is_regular_file()) continue;
        const auto name = e.path().filename().string();
        // The converter owns the weights and config; an asset must not replace them.
        if (name == "config.json" || name.ends_with(".safetensors") || name == "model.safetensors.index.json") continue;
        copy_into(e.path(), dir);
    }
}

// The tokenizer's bos/eos/pad ids replace the family's defaults in config.json.
void apply_special_tokens(const std::string& dir, json& config) {
    const fs::path d(dir);
    const auto ids = hub::special_token_ids({read_if_present(d / "tokenizer_config.json"),
                                             read_if_present(d / "special_tokens_map.json"),
                                             read_if_present(d / "tokenizer.json"), read_if_present(d / "vocab.json")});
    const std::pair<const char*, std::optional<std::uint64_t>> fields[] = {
        {"bos_token_id", ids.bos}, {"eos_token_id", ids.eos}, {"pad_token_id", ids.pad}};
    for (const auto& [name, id] : fields) {
        if (id)
            config[name] = *id;
        else if (!config.contains(name))
            spdlog::debug("config: {} left out (no tokenizer in the output says it)", name);
    }
}

// The output folder's name, with its parent's when the name alone says only the iteration (OUTPUT/iter_0000100,
// OUTPUT/{iteration}/hf).
std::string model_name(const std::string& output) {
    const fs::path path = fs::path(output).lexically_normal();
    const fs::path p = path.has_filename() ? path : path.parent_path();
    const auto name = p.filename().string();
    const bool bare = name.starts_with("iter_") || name == "hf" ||
                      (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos);
    const auto parent = p.parent_path().filename().string();
    return bare && !parent.empty() ? parent + " " + name : name;
}

}  // namespace

json write_folder_files(const ConvertOptions& options, const json& args, json config, const std::string& dir) {
    copy_tokenizer(args, options.assets, dir);
    copy_assets(options.assets, dir);
    apply_special_tokens(dir, config);
    io::write_text_file((fs::path(dir) / "config.json").string(), config.dump(2) + "\n");
    // One that --assets gave (sampling settings, say) is kept.
    if (std::error_code ec; !fs::exists(fs::path(dir) / "generation_config.json", ec))
        io::write_text_file((fs::path(dir) / "generation_config.json").string(), hub::generation_config(config).dump(2) + "\n");
    return config;
}

void write_model_card(const ConvertOptions& options, const CardFacts& facts, const std::string& dir) {
    if (!options.model_card) return;
    auto fields = hub::card_fields({facts.args, facts.config, facts.iteration, facts.checkpoint, facts.checkpoint_format,
                                    model_name(options.output), facts.parameters, facts.manifest, M2H_VERSION});
    for (const auto& [name, value] : options.model_card_fields) fields[name] = value;
    const auto card = hub::render_card(
        options.model_card_template.empty() ? hub::default_card_template() : std::string_view(options.model_card_template),
        fields);
    for (const auto& name : card.missing) spdlog::debug("model card: no value for {{{{{}}}}}, its lines left out", name);
    io::write_text_file((fs::path(dir) / "README.md").string(), card.text);
}

}  // namespace m2h::pipeline
