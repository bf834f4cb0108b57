// megatron2hf: convert a Megatron-LM checkpoint into a Hugging Face folder, in parallel over MPI ranks.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <cxxopts.hpp>
#include <zstd.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "common/byte_size.hpp"
#include "common/error.hpp"
#include "common/stop_signal.hpp"
#include "exchange/mpi_comm.hpp"
#include "formats/iteration_request.hpp"
#include "io/hdf5_writer.hpp"
#include "io/zstd_filter.hpp"
#include "pipeline/convert.hpp"
#include "pipeline/convert_run.hpp"
#include "pipeline/manifest.hpp"

namespace {

using m2h::Error;

cxxopts::Options make_options() {
    cxxopts::Options o("megatron2hf",
                       "Convert a Megatron-LM checkpoint into a Hugging Face model folder (config.json + safetensors).\n"
                       "Run under MPI: mpirun -np N megatron2hf --input CKPT --output DIR");
    o.add_options()
        ("input", "checkpoint root (with latest_checkpointed_iteration.txt) or one iteration folder (iter_NNNNNNN/, release/)", cxxopts::value<std::string>())
        ("output", "output Hugging Face folder (written atomically), or the .h5 file with --format hdf5; with several iterations, a folder that gets iter_NNNNNNN/ per iteration, or a path with {iteration}", cxxopts::value<std::string>())
        ("iteration", "'latest' (from the tracker file), N, several: N,M,..., a range A-B of the iter_* folders on disk, or 'all' of them", cxxopts::value<std::string>()->default_value("latest"))
        ("arch", "auto or a family: llama, mistral, qwen2, qwen3, opensci, gptneox, mixtral, qwen2_moe, qwen3_moe (auto: the first that can represent the model)", cxxopts::value<std::string>()->default_value("auto"))
        ("dtype", "source, bf16, fp16 or fp32 (casts round to nearest even)", cxxopts::value<std::string>()->default_value("source"))
        ("max-shard-size", "largest safetensors file, e.g. 5GB, 500MB, 2GiB", cxxopts::value<std::string>()->default_value("5GB"))
        ("memory-budget", "per-rank memory for exchange buffers, e.g. 1GiB, 256MiB", cxxopts::value<std::string>()->default_value("1GiB"))
        ("max-read-rate", "per-rank cap on source reads per second, e.g. 200MiB (default: no limit), to leave a shared filesystem's bandwidth to a training job", cxxopts::value<std::string>())
        ("readers", "who reads each source byte: writers (the rank that writes it, so tensor bytes never cross MPI) or files (one rank per source file; MPI_Alltoallv carries the bytes to their writers)", cxxopts::value<std::string>()->default_value("writers"))
        ("assets", "folder whose files are copied into the output (modeling code, tokenizer files; they replace the tokenizer the checkpoint's args name)", cxxopts::value<std::string>()->default_value(""))
        ("model-card", "template of the README.md model card (docs/model-card.md; default: the built-in one)", cxxopts::value<std::string>())
        ("model-card-field", "NAME=VALUE for the model card, over what the checkpoint tells (e.g. base_model=org/name, license=apache-2.0); repeatable", cxxopts::value<std::vector<std::string>>())
        ("no-model-card", "write no README.md")
        ("num-key-value-heads", "override the number of KV heads (query groups)", cxxopts::value<std::uint64_t>())
        ("vocab-size", "trim embedding and lm_head to this many rows (default: keep the padded vocabulary)", cxxopts::value<std::uint64_t>())
        ("overwrite", "replace an existing output folder (hdf5: an existing group)")
        ("no-fsync", "do not fsync the output before renaming it into place (faster; a machine crash can then leave a complete-looking folder with missing bytes)")
        ("verify", "re-read every written file and check each tensor against the checksum of the bytes its writer received, before the output is committed")
        ("format", "safetensors (a Hugging Face folder) or hdf5 (a group of one dataset per tensor in an .h5 file, written with parallel HDF5)", cxxopts::value<std::string>()->default_value("safetensors"))
        ("group", "hdf5: the group that receives the tensors (default iter_NNNNNNN of the converted iteration; with several iterations it must contain {iteration}); other groups of the file are kept", cxxopts::value<std::string>())
        ("compress", "hdf5: zstd or zstd:LEVEL (zstd's levels, default 3; up to 22, negative for faster) compresses every dataset with HDF5 filter 32015", cxxopts::value<std::string>())
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

// --compress: "zstd", "zstd:LEVEL" or "none".
std::optional<int> parse_compress(const std::string& s) {
    if (s == "none") return std::nullopt;
    if (s == "zstd") return m2h::io::kZstdDefaultLevel;
    const std::string prefix = "zstd:";
    if (s.starts_with(prefix)) {
        const std::string level = s.substr(prefix.size());
        std::size_t used = 0;
        int n = 0;
        try {
            n = std::stoi(level, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (level.empty() || used != level.size())
            throw Error("--compress", "zstd level '" + level + "' is not an integer");
        if (!m2h::io::zstd_level_valid(n))
            throw Error("--compress", "zstd level " + level + " is out of range (zstd accepts " +
                                          std::to_string(ZSTD_minCLevel()) + " to " + std::to_string(ZSTD_maxCLevel()) + ")");
        return n;
    }
    throw Error("--compress", "expected zstd, zstd:LEVEL or none, got '" + s + "'");
}

// --model-card FILE (read now, so that a missing template stops the run before it converts anything),
// --model-card-field NAME=VALUE, --no-model-card.
void parse_model_card(const cxxopts::ParseResult& r, m2h::pipeline::ConvertOptions& o) {
    o.model_card = r.count("no-model-card") == 0;
    if (r.count("model-card")) {
        if (!o.model_card) throw Error("--model-card", "and --no-model-card contradict each other");
        const auto path = r["model-card"].as<std::string>();
        std::ifstream in(path, std::ios::binary);
        std::ostringstream text;
        if (!(in && text << in.rdbuf()) || text.str().empty()) throw Error(path, "--model-card: cannot read the template (or it is empty)");
        o.model_card_template = text.str();
    }
    if (!r.count("model-card-field")) return;
    for (const auto& field : r["model-card-field"].as<std::vector<std::string>>()) {
        const auto eq = field.find('=');
        const auto name = field.substr(0, eq);
        if (eq == std::string::npos || name.empty() || name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
            throw Error("--model-card-field", "expected NAME=VALUE with a lower-case NAME, got '" + field + "'");
        o.model_card_fields[name] = field.substr(eq + 1);
    }
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
    const bool several = m2h::formats::parse_iteration_request(o.iteration).several();  // checked here, on every rank
    o.arch = r["arch"].as<std::string>();
    o.dtype = parse_dtype(r["dtype"].as<std::string>());
    o.max_shard_size = m2h::parse_byte_size(r["max-shard-size"].as<std::string>(), "--max-shard-size");
    o.memory_budget = m2h::parse_byte_size(r["memory-budget"].as<std::string>(), "--memory-budget");
    if (r.count("max-read-rate"))
        o.max_read_rate = m2h::parse_byte_size(r["max-read-rate"].as<std::string>(), "--max-read-rate");
    const auto readers = r["readers"].as<std::string>();
    if (readers != "writers" && readers != "files")
        throw Error("--readers", "expected writers or files, got '" + readers + "'");
    o.readers = readers == "files" ? m2h::plan::Readers::files : m2h::plan::Readers::writers;
    o.assets = r["assets"].as<std::string>();
    if (r.count("num-key-value-heads")) o.num_key_value_heads = r["num-key-value-heads"].as<std::uint64_t>();
    if (r.count("vocab-size")) o.vocab_size = r["vocab-size"].as<std::uint64_t>();
    o.overwrite = r.count("overwrite") > 0;
    o.verify = r.count("verify") > 0;
    o.fsync = r.count("no-fsync") == 0;
    o.format = r["format"].as<std::string>();
    if (o.format != "safetensors" && o.format != "hdf5")
        throw Error("--format", "expected safetensors or hdf5, got '" + o.format + "'");
    parse_model_card(r, o);
    if (o.format != "hdf5") {
        for (const char* only : {"group", "compress"})
            if (r.count(only)) throw Error(std::string("--") + only, "needs --format hdf5");
    } else {
        if (!o.assets.empty()) throw Error("--assets", "is for --format safetensors (an HDF5 output has no folder)");
        for (const char* only : {"model-card", "model-card-field", "no-model-card"})
            if (r.count(only)) throw Error(std::string("--") + only, "is for --format safetensors (an HDF5 output has no folder)");
        if (r.count("group")) {
            o.group = r["group"].as<std::string>();
            m2h::io::check_hdf5_group_name(o.group);
            if (several && !m2h::formats::has_iteration_placeholder(o.group))
                throw Error("--group", "'" + o.group + "' would receive every iteration; with several, put {iteration} in it");
        }
        if (r.count("compress")) o.zstd_level = parse_compress(r["compress"].as<std::string>());
    }
    const auto level = spdlog::level::from_str(r["log-level"].as<std::string>());
    if (level == spdlog::level::off && r["log-level"].as<std::string>() != "off")
        throw Error("--log-level", "unknown level '" + r["log-level"].as<std::string>() + "'");
    spdlog::set_level(level);
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    // Before MPI_Init too: with a short --time, SLURM's warning signal can arrive while MPI starts up, and
    // SIGUSR1's default action would kill the rank without its error line or the staging folder's removal.
    m2h::install_stop_signals();
    // Open MPI busy-polls in blocking calls unless it knows the node is oversubscribed, which it does not under
    // srun. The engine's own waits sleep (exchange/mpi_comm.cpp), but parallel HDF5's collective MPI-IO calls do
    // not: with more ranks than cores they starved each other (a 1.4 MB HDF5 output: 8 s instead of 0.1 s on 3
    // hosts x 2 ranks over 2 cores). Yielding costs a system call per poll otherwise. A user's setting wins.
    ::setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    m2h::exchange::MpiSession mpi(&argc, &argv);
    m2h::exchange::Comm comm;
    m2h::install_stop_signals();  // again: MPI_Init may install handlers of its own
    auto logger = spdlog::stderr_color_mt("megatron2hf");
    logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n] [%^%l%$] %v");
    spdlog::set_default_logger(logger);
    try {
        // `megatron2hf verify DIR`: re-check a converted folder against its manifest.
        if (argc >= 2 && std::string_view(argv[1]) == "verify") {
            m2h::pipeline::VerifyResult result;
            m2h::exchange::collective(comm, [&] {
                if (argc != 3) throw Error("command line", "usage: megatron2hf verify DIR");
                if (comm.rank() == 0) result = m2h::pipeline::verify_output_dir(argv[2]);
            });
            if (comm.rank() == 0)
                std::printf("OK: %llu tensors, %llu bytes match the manifest of %s\n",
                            static_cast<unsigned long long>(result.tensors), static_cast<unsigned long long>(result.bytes), argv[2]);
            return 0;
        }
        std::optional<m2h::pipeline::ConvertOptions> options;
        m2h::exchange::collective(comm, [&] { options = parse(argc, argv, comm.rank() == 0); });
        if (!options) return 0;
        if (comm.rank() != 0) spdlog::set_level(std::max(spdlog::get_level(), spdlog::level::warn));
        if (const auto request = m2h::formats::parse_iteration_request(options->iteration); request.several()) {
            // Exit 0 only when every selected iteration is converted; each failed one printed its line.
            const auto run = m2h::pipeline::convert_iterations(comm, *options, request);
            return run.failed.empty() ? 0 : 1;
        }
        const auto s = m2h::pipeline::convert(comm, *options);
        if (comm.rank() == 0) m2h::pipeline::log_done(s, options->output);
        return 0;
    } catch (const m2h::exchange::PeerFailed&) {
        return 1;  // the failing rank printed the error
    } catch (const m2h::exchange::PeersLost& e) {
        // What this rank owns is cleaned up; MPI_Finalize would wait for the lost ranks for ever.
        std::fprintf(stderr, "megatron2hf: error: %s\n", e.what());
        std::fflush(nullptr);
        std::_Exit(1);
    } catch (const Error& e) {
        std::fprintf(stderr, "megatron2hf: error: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        // Not part of the agreed error protocol: other ranks may be waiting, so take them all down.
        std::fprintf(stderr, "megatron2hf: internal error on rank %d: %s\n", comm.rank(), e.what());
        comm.abort(2);
    }
}
