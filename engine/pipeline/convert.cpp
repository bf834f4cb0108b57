#include "pipeline/convert.hpp"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/byte_size.hpp"
#include "common/error.hpp"
#include "common/fault_injection.hpp"
#include "exchange/transfer_executor.hpp"
#include "io/disk_space.hpp"
#include "io/file.hpp"
#include "io/hdf5_writer.hpp"
#include "io/process_io.hpp"
#include "io/staging_dir.hpp"
#include "model/hf_config.hpp"
#include "pipeline/checksum_sink.hpp"
#include "pipeline/from_root.hpp"
#include "pipeline/hub_files.hpp"
#include "pipeline/manifest.hpp"
#include "plan/hdf5_layout.hpp"

namespace m2h::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;
using exchange::collective;
using exchange::Comm;

namespace {

using Clock = std::chrono::steady_clock;

// The weight files at their final sizes, their blocks reserved where the filesystem can, after a check that they
// fit at all: a full disk or quota fails here, before any tensor moves.
void create_output_files(const plan::OutputLayout& layout, const std::string& dir) {
    std::uint64_t bytes = 0;
    for (const auto& f : layout.files) bytes += f.size;
    // config.json, the index, the manifest: a few files of a few MB at most.
    if (const auto why = io::space_shortfall(bytes + (4ull << 20), layout.files.size() + 4, io::free_space(dir)); !why.empty())
        throw Error(dir, why);
    for (const auto& f : layout.files) {
        io::File file((fs::path(dir) / f.name).string(), io::File::Mode::CreateTruncate);
        file.truncate(f.size);
        file.reserve(f.size);
        file.write_at(0, std::as_bytes(std::span(f.header.data(), f.header.size())));
    }
}

// The HDF5 output on every rank: rank 0 checks the path, every rank opens the file and creates the group and
// datasets; commit renames the group and (rank 0) a new file into place. A failure removes what this run made.
class Hdf5Output {
public:
    explicit Hdf5Output(const Comm& comm) : comm_(comm) {}
    Hdf5Output(const Hdf5Output&) = delete;
    Hdf5Output& operator=(const Hdf5Output&) = delete;
    ~Hdf5Output() {
        writer_.reset();  // every rank closes the file before rank 0 removes a new one
        if (!committed_ && comm_.rank() == 0) io::discard_hdf5_file(target_);
    }

    // `data_bytes`: the datasets' bytes uncompressed. With zstd the stored size is not known before writing, so
    // only the metadata margin and an inode are checked then.
    void open(const ConvertOptions& options, const io::Hdf5Contents& contents, std::uint64_t data_bytes) {
        const json t = from_root(comm_, [&] {
            const auto t = io::prepare_hdf5_output(options.output, contents.group, options.overwrite);
            const auto dir = fs::path(t.final_path).parent_path().string();
            const std::uint64_t need = (contents.zstd_level ? 0 : data_bytes) + (4ull << 20);
            if (const auto why = io::space_shortfall(need, t.created ? 1 : 0, io::free_space(dir)); !why.empty()) {
                io::discard_hdf5_file(t);
                throw Error(dir, why);
            }
            return json{{"final", t.final_path}, {"open", t.open_path}, {"created", t.created}};
        });
        target_ = {t["final"], t["open"], t["created"]};
        collective(comm_, [&] { writer_ = std::make_unique<io::Hdf5Writer>(comm_.handle(), target_, contents); });
    }
    io::Hdf5Writer& writer() { return *writer_; }
    // With `durable`, the closed file is fsynced before a new one gets its name, and its folder after.
    std::uint64_t commit(bool overwrite, bool durable) {
        std::uint64_t stored = 0;
        collective(comm_, [&] { stored = writer_->commit(overwrite); });
        writer_.reset();
        collective(comm_, [&] {
            if (comm_.rank() != 0) return;
            if (durable) io::sync_path(target_.open_path);
            io::commit_hdf5_file(target_);
            if (durable && target_.created) io::sync_path(fs::path(target_.final_path).parent_path().string());
        });
        committed_ = true;
        return stored;
    }

private:
    const Comm& comm_;
    io::Hdf5Target target_;
    std::unique_ptr<io::Hdf5Writer> writer_;
    bool committed_ = false;
};

json options_json(const ConvertOptions& o) {
    return {{"input", o.input},
            {"output", o.output},
            {"iteration", o.iteration},
            {"arch", o.arch},
            {"dtype", o.dtype ? std::string(torch_name(*o.dtype)) : std::string("source")},
            {"max_shard_size", o.max_shard_size},
            {"memory_budget", o.memory_budget},
            {"assets", o.assets},
            {"num_key_value_heads", o.num_key_value_heads ? json(*o.num_key_value_heads) : json(nullptr)},
            {"vocab_size", o.vocab_size ? json(*o.vocab_size) : json(nullptr)}};
}

// Gathers every writer's checksummed segments on rank 0, which writes the manifest; with --verify every rank
// then re-reads its share of the files and checks them against it. Returns the manifest's summary on rank 0.
std::string write_manifest_and_verify(const Comm& comm, const ConvertOptions& options, const std::vector<Segment>& mine,
                               const plan::OutputLayout& layout, const std::vector<tensors::OutputTensor>& tensors,
                               const Provenance& provenance, const std::string& dir) {
    json local = json::array();
    for (const auto& s : mine) local.push_back({s.tensor, s.offset, s.length, s.crc});
    std::vector<Segment> all;
    for (const auto& from : all_gather_json(comm, local))
        for (const auto& s : from)
            all.push_back({s[0].get<std::uint32_t>(), s[1].get<std::uint64_t>(), s[2].get<std::uint64_t>(), s[3].get<std::uint32_t>()});
    std::string summary;
    collective(comm, [&] {
        if (comm.rank() != 0) return;
        const auto crcs = tensor_checksums(std::move(all), tensors);
        io::write_text_file((fs::path(dir) / kManifestName).string(), make_manifest(provenance, layout, tensors, crcs).dump(1) + "\n");
        summary = manifest_summary(layout, tensors, crcs);
    });
    if (!options.verify) return summary;
    std::uint64_t checked = 0;
    collective(comm, [&] {
        std::vector<std::string> files;
        for (std::size_t i = static_cast<std::size_t>(comm.rank()); i < layout.files.size(); i += static_cast<std::size_t>(comm.size()))
            files.push_back(layout.files[i].name);
        if (!files.empty()) checked = verify_output_dir(dir, files).tensors;
    });
    checked = comm.sum(checked);
    if (comm.rank() == 0) spdlog::info("verify: {} tensors re-read and matched their checksums", checked);
    return summary;
}

// Every output byte is on disk before the folder gets its final name: each rank fsyncs its share of the weight
// files (a file's dirty pages are flushed whichever rank wrote them), rank 0 the small files it wrote and the
// staging folder itself.
void sync_outputs(const Comm& comm, const std::vector<std::string>& outputs, const std::string& dir) {
    collective(comm, [&] {
        const auto rank = static_cast<std::size_t>(comm.rank()), size = static_cast<std::size_t>(comm.size());
        for (std::size_t i = rank; i < outputs.size(); i += size) io::sync_path(outputs[i]);
        if (rank != 0) return;
        for (const auto& e : fs::directory_iterator(dir))
            if (e.is_regular_file() && std::find(outputs.begin(), outputs.end(), e.path().string()) == outputs.end())
                io::sync_path(e.path().string());
        io::sync_path(dir);
    });
}

// The number of distinct host names among the ranks (collective), for the log: a multi-node job says so.
std::size_t host_count(const Comm& comm) {
    char name[256] = {};
    ::gethostname(name, sizeof name - 1);
    const std::string mine(name);
    std::set<std::string> hosts;
    for (const auto& bytes : comm.all_gather(std::as_bytes(std::span(mine.data(), mine.size()))))
        hosts.emplace(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return hosts.size();
}

}  // namespace

ConvertSummary convert(const Comm& comm, const ConvertOptions& options) {
    const auto start = Clock::now();
    auto share = index_share(options.input, options.iteration, comm.rank(), comm.size());
    const double indexing = std::chrono::duration<double>(Clock::now() - start).count();
    std::optional<PlannedConversion> none;
    auto summary = convert(comm, options, std::move(share), none);
    summary.seconds += indexing;
    summary.prepare_seconds += indexing;
    return summary;
}

ConvertSummary convert(const Comm& comm, const ConvertOptions& options, IndexShare share,
                       std::optional<PlannedConversion>& previous) {
    const auto start = Clock::now();
    auto checkpoint = gather_index(comm, std::move(share));
    const auto indexed = Clock::now();
    const bool root = comm.rank() == 0;
    const bool hdf5 = options.format == "hdf5";
    if (hdf5) collective(comm, [] { io::init_hdf5(); });
    const std::uint64_t read_before = io::process_bytes_read();
    const std::string& iteration_dir = checkpoint.iteration_dir;
    const auto hosts = host_count(comm);
    if (root)
        spdlog::info("checkpoint {} ({} format), {} rank(s) on {} host(s)", iteration_dir, checkpoint.format,
                     comm.size(), hosts);

    // staging folder (rank 0 owns it; every rank writes into it)
    std::unique_ptr<io::StagingDir> staging;
    const json staged = from_root(comm, [&] {
        if (hdf5) return json("");  // the HDF5 output stages its own file and group
        staging = std::make_unique<io::StagingDir>(options.output, options.overwrite);
        return json(staging->path());
    });
    const std::string staging_dir = staged;

    // plan (pure, the same on every rank)
    const std::int64_t planned_for = previous ? previous->index.iteration : 0;
    const auto plan_start = Clock::now();
    const auto& planned = plan_conversion(comm, options, std::move(checkpoint.index), previous);
    const auto plan_end = Clock::now();
    const auto& [index, spec, mapping, conversion, chunk_rows, reused] = planned;
    std::vector<std::string> outputs;
    for (const auto& f : conversion.layout.files) outputs.push_back((fs::path(staging_dir) / f.name).string());
    if (root) {
        spdlog::info("model: {} ({} layers, hidden {}, {} heads / {} KV heads), TP {} PP {} VPP {}",
                     model::arch_name(spec.arch), spec.num_layers, spec.hidden_size, spec.num_heads,
                     spec.num_query_groups, spec.tp, spec.pp, spec.vpp);
        spdlog::info("plan: {} tensors, {} in {} file(s), {} round(s); skipping {} extra-state entries{}",
                     mapping.outputs.size(), format_bytes(conversion.layout.total_size), conversion.layout.files.size(),
                     conversion.transfers.rounds.size(), index.skipped.size(),
                     reused ? fmt::format(" (plan reused: the layout of iteration {})", planned_for) : "");
        for (const auto& s : mapping.ignored) spdlog::debug("not converted: {}", s);
        if (options.max_read_rate)
            spdlog::info("reads paced to at most {}/s per rank (--max-read-rate)", format_bytes(options.max_read_rate));
    }

    collective(comm, [&] {
        if (root && !hdf5) create_output_files(conversion.layout, staging_dir);
    });
    const DType written = options.dtype.value_or(spec.params_dtype);
    Hdf5Output h5(comm);
    std::unique_ptr<io::OutputSink> sink;
    const std::string hdf5_group = options.group.empty() ? fmt::format("iter_{:07d}", index.iteration) : options.group;
    if (hdf5) {
        io::Hdf5Contents contents;
        contents.group = hdf5_group;
        contents.tensors = &mapping.outputs;
        contents.chunk_rows = chunk_rows;
        contents.zstd_level = options.zstd_level;
        collective(comm, [&] {
            io::check_hdf5_group_name(contents.group);
            // Attributes are written collectively, so every rank renders the same values.
            contents.attributes = {
                {"config", model::hf_config(spec, index.args, mapping.vocab_size, written).dump(2) + "\n"},
                {"source_path", iteration_dir},
                {"source_iteration", std::int64_t{index.iteration}},
                {"source_format", checkpoint.format},
                {"engine_version", std::string("megatron2hf ") + M2H_VERSION},
                {"compression", options.zstd_level ? "zstd:" + std::to_string(*options.zstd_level) : std::string("none")},
            };
        });
        std::uint64_t data_bytes = 0;
        for (const auto& t : mapping.outputs) data_bytes += t.nbytes();
        h5.open(options, contents, data_bytes);
        sink = std::make_unique<io::Hdf5Sink>(
            h5.writer(), plan::hdf5_writes(conversion.transfers, conversion.layout, mapping.outputs));
        if (root) spdlog::info("hdf5: group '{}' of {}", contents.group, options.output);
    } else {
        sink = std::make_unique<io::FileSink>(outputs);
    }
    // The safetensors folder carries a manifest of per-tensor checksums of the bytes the writers received.
    std::unique_ptr<ChecksumSink> checksums;
    if (!hdf5) checksums = std::make_unique<ChecksumSink>(*sink, conversion.layout, mapping.outputs);
    io::OutputSink& destination = checksums ? static_cast<io::OutputSink&>(*checksums) : *sink;

    // move
    const auto move_start = Clock::now();
    const double prepare_seconds = std::chrono::duration<double>(move_start - start).count();
    const auto ms = [](auto from, auto to) { return std::chrono::duration<double, std::milli>(to - from).count(); };
    if (root)
        spdlog::debug("before the first byte moved: {:.2f} ms gathering the index, {:.2f} ms planning, {:.2f} ms for "
                      "the staging folder and output files, {:.2f} ms in all",
                      ms(start, indexed), ms(plan_start, plan_end), ms(indexed, plan_start) + ms(plan_end, move_start),
                      ms(start, move_start));
    auto last_log = move_start;
    const auto describe = [&](std::uint32_t tag) {
        const auto& c = mapping.copies.at(tag);
        return index.files[index.tensors[c.src].file].name() + ": " + index.tensors[c.src].key + " -> " +
               mapping.outputs[c.dst].name;
    };
    const auto stats = exchange::execute_transfers(
        comm, conversion.transfers, index.files, destination, describe, [&](std::size_t round, std::uint64_t done) {
            const auto now = Clock::now();
            if (!root || (now - last_log < std::chrono::seconds(2) && round + 1 != conversion.transfers.rounds.size()))
                return;
            last_log = now;
            const double s = std::chrono::duration<double>(now - move_start).count();
            spdlog::info("progress: {} / {} ({:.0f}%), {:.2f} GB/s", format_bytes(done),
                         format_bytes(conversion.transfers.total_bytes),
                         100.0 * static_cast<double>(done) / static_cast<double>(std::max<std::uint64_t>(1, conversion.transfers.total_bytes)),
                         s > 0 ? static_cast<double>(done) / s / 1e9 : 0.0);
        },
        {options.memory_budget / 4, options.max_read_rate});

    // finish
    json config;  // rank 0: the config.json written
    collective(comm, [&] {
        fault_point(comm.rank(), "finish");
        if (!root || hdf5) return;
        config = write_folder_files(options, index.args, model::hf_config(spec, index.args, mapping.vocab_size, written),
                                    staging_dir);
        if (conversion.layout.index_json)
            io::write_text_file((fs::path(staging_dir) / "model.safetensors.index.json").string(), *conversion.layout.index_json);
    });
    if (!hdf5) {
        const auto manifest = write_manifest_and_verify(comm, options, checksums->segments(), conversion.layout,
                                                        mapping.outputs,
                                                        {iteration_dir, index.iteration, checkpoint.format, options_json(options)},
                                                        staging_dir);
        collective(comm, [&] {
            if (!root) return;
            std::uint64_t parameters = 0;
            for (const auto& t : mapping.outputs) parameters += t.nbytes() / dtype_size(t.dtype);
            write_model_card(options, {index.args, config, index.iteration, iteration_dir, checkpoint.format, parameters, manifest},
                             staging_dir);
        });
    }
    ConvertSummary summary;
    summary.bytes_read = comm.sum(stats.bytes_read);
    summary.process_bytes_read = comm.sum(io::process_bytes_read() - read_before);
    summary.bytes_written = comm.sum(stats.bytes_written);
    const auto streamed = comm.sum(stats.bytes_streamed), sent = comm.sum(stats.bytes_sent);
    if (root)
        spdlog::debug("moved: {} of {} source bytes streamed by their writers, {} output bytes sent over MPI",
                      streamed, summary.bytes_read, sent);
    if (hdf5) {
        summary.hdf5_stored_bytes = h5.commit(options.overwrite, options.fsync);
        summary.hdf5_group = hdf5_group;
    }
    if (!hdf5 && options.fsync) sync_outputs(comm, outputs, staging_dir);
    collective(comm, [&] {
        if (root && !hdf5) staging->commit(options.fsync);
    });
    summary.tensors = mapping.outputs.size();
    summary.model_bytes = conversion.model_bytes;
    summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    summary.prepare_seconds = prepare_seconds;
    summary.plan_reused = reused;
    return summary;
}

}  // namespace m2h::pipeline
