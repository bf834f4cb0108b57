// megatron2hf: convert a Megatron-LM checkpoint into a Hugging Face folder, in parallel over MPI ranks.
#include <cstdio>
#include <iostream>

#include <cxxopts.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "common/byte_size.hpp"
#include "common/error.hpp"
#include "exchange/mpi_comm.hpp"
#include "pipeline/convert.hpp"

namespace {

using m2h::Error;

cxxopts::Options make_options() {
    cxxopts::Options o("megatron2hf",
                       "Convert a Megatron-LM checkpoint into a Hugging Face model folder (config.json + safetensors).\n"
                       "Run under MPI: mpirun -np N megatron2hf --input CKPT --output DIR");
    o.add_options()
        ("input", "checkpoint root (with latest_checkpointed_iteration.txt) or one iteration folder (iter_NNNNNNN/, release/)", cxxopts::value<std::string>())
        ("output", "output Hugging Face folder (written atomically)", cxxopts::value<std::string>())
        ("iteration", "iteration to convert: a number or 'latest' (from the tracker file)", cxxopts::value<std::string>()->default_value("latest"))
        ("arch", "auto, opensci or llama (auto: qk-layernorm with biases -> opensci; neither -> llama)", cxxopts::value<std::string>()->default_value("auto"))
        ("dtype", "source, bf16, fp16 or fp32 (casts round to nearest even)", cxxopts::value<std::string>()->default_value("source"))
        ("max-shard-size", "largest safetensors file, e.g. 5GB, 500MB, 2GiB", cxxopts::value<std::string>()->default_value("5GB"))
        ("memory-budget", "per-rank memory for exchange buffers, e.g. 1GiB, 256MiB", cxxopts::value<std::string>()->default_value("1GiB"))
        ("assets", "folder whose files are copied into the output (modeling code, tokenizer files)", cxxopts::value<std::string>()->default_value(""))
        ("num-key-value-heads", "override the number of KV heads (query groups)", cxxopts::value<std::uint64_t>())
        ("vocab-size", "trim embedding and lm_head to this many rows (default: keep the padded vocabulary)", cxxopts::value<std::uint64_t>())
        ("overwrite", "replace an existing output folder")
        ("log-level", "trace, debug, info, warn, error", cxxopts::value<std::string>()->default_value("info"))
        ("version", "print the version")
        ("h,help", "print this help");
    return o;
}

std::optional<m2h::DType> parse_dtype(const std::string& s) {
    if (s == "source") return std::nullopt;
    if (s == "bf16" || s == "bfloat16") return m2h::DType::BF16;
    if (s == "fp16" || s == "float16") return m2h::DType::F16;
    if (s == "fp32" || s == "float32") return m2h::DType::F32;
    throw Error("--dtype", "expected source, bf16, fp16 or fp32, got '" + s + "'");
}

// Parses argv; nullopt when only help or the version was asked for.
std::optional<m2h::pipeline::ConvertOptions> parse(int argc, char** argv, bool print) {
    auto spec = make_options();
    cxxopts::ParseResult r;
    try {
        r = spec.parse(argc, argv);
    } catch (const cxxopts::exceptions::exception& e) {
        throw Error("command line", e.what());
    }
    if (r.count("help")) {
        if (print) std::cout << spec.help() << std::endl;
        return std::nullopt;
    }
    if (r.count("version")) {
        if (print) std::cout << "megatron2hf " << M2H_VERSION << std::endl;
        return std::nullopt;
    }
    if (!r.unmatched().empty()) throw Error("command line", "unexpected argument '" + r.unmatched().front() + "'");
    for (const char* required : {"input", "output"})
        if (!r.count(required)) throw Error("command line", std::string("--") + required + " is required (see --help)");
    m2h::pipeline::ConvertOptions o;
    o.input = r["input"].as<std::string>();
    o.output = r["output"].as<std::string>();
    o.iteration = r["iteration"].as<std::string>();
    o.arch = r["arch"].as<std::string>();
    o.dtype = parse_dtype(r["dtype"].as<std::string>());
    o.max_shard_size = m2h::parse_byte_size(r["max-shard-size"].as<std::string>(), "--max-shard-size");
    o.memory_budget = m2h::parse_byte_size(r["memory-budget"].as<std::string>(), "--memory-budget");
    o.assets = r["assets"].as<std::string>();
    if (r.count("num-key-value-heads")) o.num_key_value_heads = r["num-key-value-heads"].as<std::uint64_t>();
    if (r.count("vocab-size")) o.vocab_size = r["vocab-size"].as<std::uint64_t>();
    o.overwrite = r.count("overwrite") > 0;
    const auto level = spdlog::level::from_str(r["log-level"].as<std::string>());
    if (level == spdlog::level::off && r["log-level"].as<std::string>() != "off")
        throw Error("--log-level", "unknown level '" + r["log-level"].as<std::string>() + "'");
    spdlog::set_level(level);
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    m2h::exchange::MpiSession mpi(&argc, &argv);
    m2h::exchange::Comm comm;
    auto logger = spdlog::stderr_color_mt("megatron2hf");
    logger->set_pattern("[%Y-%m-%d %H:%M:%S] [%n] [%^%l%$] %v");
    spdlog::set_default_logger(logger);
    try {
        std::optional<m2h::pipeline::ConvertOptions> options;
        m2h::exchange::collective(comm, [&] { options = parse(argc, argv, comm.rank() == 0); });
        if (!options) return 0;
        if (comm.rank() != 0) spdlog::set_level(std::max(spdlog::get_level(), spdlog::level::warn));
        const auto s = m2h::pipeline::convert(comm, *options);
        if (comm.rank() == 0)
            spdlog::info("done: {} tensors, {} bytes written, {} bytes read from disk for {} model bytes ({:.3f}x), "
                         "{:.2f} s, {:.2f} GB/s -> {}",
                         s.tensors, s.bytes_written, s.process_bytes_read, s.model_bytes,
                         s.model_bytes ? static_cast<double>(s.process_bytes_read) / static_cast<double>(s.model_bytes) : 0.0,
                         s.seconds, s.seconds > 0 ? static_cast<double>(s.bytes_written) / s.seconds / 1e9 : 0.0,
                         options->output);
        return 0;
    } catch (const m2h::exchange::PeerFailed&) {
        return 1;  // the failing rank printed the error
    } catch (const Error& e) {
        std::fprintf(stderr, "megatron2hf: error: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        // Not part of the agreed error protocol: other ranks may be waiting, so take them all down.
        std::fprintf(stderr, "megatron2hf: internal error on rank %d: %s\n", comm.rank(), e.what());
        comm.abort(2);
    }
}
