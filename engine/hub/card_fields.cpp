#include "hub/card_fields.hpp"

#include <algorithm>
#include <optional>
#include <vector>

#include <fmt/format.h>

namespace m2h::hub {

namespace {

using nlohmann::json;

std::optional<std::uint64_t> count_arg(const json& args, const char* name) {
    const auto it = args.find(name);
    if (it == args.end() || !it->is_number_integer() || it->get<std::int64_t>() < 0) return std::nullopt;
    return it->get<std::uint64_t>();
}

std::optional<double> number_arg(const json& args, const char* name) {
    const auto it = args.find(name);
    if (it == args.end() || !it->is_number()) return std::nullopt;
    return it->get<double>();
}

std::string string_arg(const json& args, const char* name) {
    const auto it = args.find(name);
    return it != args.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string number_text(double v) { return json(v).dump(); }  // 0.0003, 3e-05: as Python prints them

// Samples seen, and where the number comes from.
std::optional<std::pair<std::uint64_t, std::string>> samples_seen(const json& args, std::int64_t iteration) {
    if (const auto consumed = count_arg(args, "consumed_train_samples"); consumed && (*consumed > 0 || iteration == 0))
        return std::pair{*consumed, std::string("consumed_train_samples in the checkpoint's args")};
    const auto batch = count_arg(args, "global_batch_size");
    if (!batch || iteration < 0) return std::nullopt;
    const auto ramp = args.find("rampup_batch_size");
    const bool ramped = ramp != args.end() && !ramp->is_null();
    return std::pair{*batch * static_cast<std::uint64_t>(iteration),
                     std::string("global_batch_size × iteration") + (ramped ? ", which overcounts the batch-size ramp-up" : "")};
}

// "cosine decay from 0.0003 to 3e-05 over 1000 iterations, after 100 warm-up iterations"
std::string lr_schedule(const json& args) {
    const auto lr = number_arg(args, "lr");
    const auto style = string_arg(args, "lr_decay_style");
    if (!lr || style.empty()) return "";
    if (style == "constant") return "constant at " + number_text(*lr);
    const auto min_lr = number_arg(args, "min_lr").value_or(0.0);
    std::string text = (style == "WSD" ? std::string("warmup-stable-decay") : style + " decay") + " from " +
                       number_text(*lr) + " to " + number_text(min_lr);
    if (style == "WSD") {
        const auto decay = string_arg(args, "lr_wsd_decay_style");
        if (const auto n = count_arg(args, "lr_wsd_decay_iters"); n && *n)
            text += fmt::format(", {}decay over the last {} iterations", decay.empty() ? "" : decay + " ", *n);
        else if (const auto s = count_arg(args, "lr_wsd_decay_samples"); s && *s)
            text += fmt::format(", {}decay over the last {} samples", decay.empty() ? "" : decay + " ", *s);
    } else if (const auto n = count_arg(args, "lr_decay_iters"); n && *n) {
        text += fmt::format(" over {} iterations", *n);
    } else if (const auto s = count_arg(args, "lr_decay_samples"); s && *s) {
        text += fmt::format(" over {} samples", *s);
    } else if (const auto t = count_arg(args, "train_iters"); t && *t) {
        text += fmt::format(" over {} iterations", *t);
    }
    if (const auto w = count_arg(args, "lr_warmup_iters"); w && *w)
        text += fmt::format(", after {} warm-up iterations", *w);
    else if (const auto ws = count_arg(args, "lr_warmup_samples"); ws && *ws)
        text += fmt::format(", after {} warm-up samples", *ws);
    else if (const auto f = number_arg(args, "lr_warmup_fraction"); f && *f > 0)
        text += fmt::format(", the first {}% of them warm-up", number_text(*f * 100));
    return text;
}

// One Markdown bullet per dataset: Megatron's data_path is either paths or weight, path, weight, path, ...
std::string data_list(const json& args) {
    std::string out;
    const auto bullet = [&](const std::string& line) { out += (out.empty() ? "" : "\n") + ("- " + line); };
    const auto path_list = [&](const char* name, const std::string& label) {
        const auto it = args.find(name);
        if (it == args.end() || !it->is_array() || it->empty()) return;
        std::vector<std::string> items;
        for (const auto& v : *it)
            if (v.is_string()) items.push_back(v.get<std::string>());
        const bool weighted = items.size() % 2 == 0 && std::all_of(items.begin(), items.end(), [&, i = 0](const std::string& s) mutable {
            return i++ % 2 != 0 || (!s.empty() && s.find_first_not_of("0123456789.eE+-") == std::string::npos);
        });
        for (std::size_t i = 0; i < items.size(); i += weighted ? 2 : 1)
            bullet(label + (weighted ? fmt::format("`{}` (weight {})", items[i + 1], items[i]) : fmt::format("`{}`", items[i])));
    };
    path_list("data_path", "");
    path_list("train_data_path", "train: ");
    path_list("valid_data_path", "validation: ");
    path_list("test_data_path", "test: ");
    if (const auto blend = string_arg(args, "data_args_path"); !blend.empty()) bullet(fmt::format("the blend in `{}`", blend));
    if (const auto blend = string_arg(args, "per_split_data_args_path"); !blend.empty())
        bullet(fmt::format("the per-split blends in `{}`", blend));
    if (out.empty() && args.value("mock_data", json(false)) == json(true)) bullet("mock data (no dataset)");
    return out;
}

std::string tokenizer_text(const json& args) {
    const auto type = string_arg(args, "tokenizer_type");
    if (type.empty()) return "";
    const auto model = string_arg(args, "tokenizer_model");
    return type + (model.empty() ? "" : " `" + model + "`");
}

}  // namespace

std::string short_count(std::uint64_t n) {
    constexpr std::pair<double, const char*> kScales[] = {{1e12, "T"}, {1e9, "B"}, {1e6, "M"}, {1e3, "K"}};
    for (const auto& [scale, suffix] : kScales)
        if (static_cast<double>(n) >= scale) return fmt::format("{:.3g}{}", static_cast<double>(n) / scale, suffix);
    return std::to_string(n);
}

std::string count_text(std::uint64_t n) {
    std::string digits = std::to_string(n), grouped;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i && (digits.size() - i) % 3 == 0) grouped += ',';
        grouped += digits[i];
    }
    return n >= 1000 ? grouped + " (" + short_count(n) + ")" : grouped;
}

CardFields card_fields(const CardSource& s) {
    CardFields f;
    const auto& args = s.args.is_object() ? s.args : json::object();
    const auto& config = s.config.is_object() ? s.config : json::object();
    f["model_name"] = s.model_name;
    f["model_type"] = string_arg(config, "model_type");
    if (const auto a = config.find("architectures"); a != config.end() && a->is_array() && !a->empty() && (*a)[0].is_string())
        f["architecture"] = (*a)[0].get<std::string>();
    f["dtype"] = string_arg(config, "torch_dtype");
    if (s.parameters) f["parameters"] = short_count(s.parameters);
    f["iteration"] = std::to_string(s.iteration);
    f["checkpoint"] = s.checkpoint;
    f["checkpoint_format"] = s.checkpoint_format;
    if (const auto t = count_arg(args, "train_iters"); t && *t)
        f["training_length"] = std::to_string(*t) + " iterations";
    else if (const auto ts = count_arg(args, "train_samples"); ts && *ts)
        f["training_length"] = std::to_string(*ts) + " samples";
    const auto seq = count_arg(args, "seq_length");
    if (const auto seen = samples_seen(args, s.iteration)) {
        f["samples_seen"] = count_text(seen->first);
        if (seq) {
            f["tokens_seen"] = count_text(seen->first * *seq);
            f["tokens_seen_from"] = seen->second + " × seq_length";
        }
    }
    if (const auto b = count_arg(args, "global_batch_size")) f["global_batch_size"] = std::to_string(*b);
    if (seq) f["seq_length"] = std::to_string(*seq);
    f["lr_schedule"] = lr_schedule(args);
    f["data"] = data_list(args);
    f["tokenizer"] = tokenizer_text(args);
    f["manifest"] = s.manifest;
    f["megatron2hf_version"] = s.version;
    return f;
}

}  // namespace m2h::hub
