#include "pipeline/convert_run.hpp"

#include <cstdio>
#include <future>
#include <optional>

#include <spdlog/spdlog.h>

#include "common/error.hpp"
#include "common/stop_signal.hpp"
#include "formats/checkpoint_discovery.hpp"
#include "pipeline/from_root.hpp"

namespace m2h::pipeline {

namespace {

// The options of one iteration of the run: its number, and its own output folder or HDF5 group.
ConvertOptions options_for(const ConvertOptions& run, std::int64_t iteration) {
    ConvertOptions o = run;
    o.iteration = std::to_string(iteration);
    if (run.format == "hdf5")  // named by the iteration asked for, as the folders are
        o.group = run.group.empty() ? formats::iteration_dir_name(iteration) : formats::with_iteration(run.group, iteration);
    else
        o.output = formats::output_for_iteration(run.output, iteration);
    return o;
}

std::string join(const std::vector<std::int64_t>& numbers) {
    std::string out;
    for (const auto n : numbers) out += (out.empty() ? "" : ", ") + std::to_string(n);
    return out;
}

}  // namespace

void log_done(const ConvertSummary& s, const std::string& output) {
    if (!s.hdf5_group.empty())
        spdlog::info("hdf5: group '{}': {} bytes of tensors stored in {} bytes (compression ratio {:.3f})", s.hdf5_group,
                     s.bytes_written, s.hdf5_stored_bytes,
                     s.hdf5_stored_bytes ? static_cast<double>(s.bytes_written) / static_cast<double>(s.hdf5_stored_bytes) : 0.0);
    spdlog::info("done: {} tensors, {} bytes written, {} bytes read from disk for {} model bytes ({:.3f}x), {:.2f} s, "
                 "{:.2f} GB/s, {:.1f} ms before the first byte moved{} -> {}",
                 s.tensors, s.bytes_written, s.process_bytes_read, s.model_bytes,
                 s.model_bytes ? static_cast<double>(s.process_bytes_read) / static_cast<double>(s.model_bytes) : 0.0,
                 s.seconds, s.seconds > 0 ? static_cast<double>(s.bytes_written) / s.seconds / 1e9 : 0.0,
                 s.prepare_seconds * 1e3, s.plan_reused ? " (plan reused)" : "", output);
}

RunSummary convert_iterations(const exchange::Comm& comm, const ConvertOptions& options,
                              const formats::IterationRequest& request) {
    const auto listed = from_root(comm, [&] {
        const auto on_disk = request.kind == formats::IterationRequest::Kind::List
                                 ? std::vector<std::int64_t>{}
                                 : formats::iterations_on_disk(options.input);
        const auto selected = formats::select_iterations(request, on_disk);
        if (selected.empty()) throw Error(options.input, "no iter_* folder matches --iteration " + request.text);
        return nlohmann::json(selected);
    });
    const auto iterations = listed.get<std::vector<std::int64_t>>();
    const bool root = comm.rank() == 0;
    if (root) spdlog::info("{} iteration(s) to convert: {}", iterations.size(), join(iterations));
    // Each iteration's index shares are made on a thread of their own while the previous iteration moves.
    const auto share_of = [&](std::int64_t iteration) {
        return std::async(std::launch::async, index_share, options.input, std::to_string(iteration), comm.rank(),
                          comm.size());
    };
    std::optional<PlannedConversion> plan;
    RunSummary run;
    auto next = share_of(iterations.front());
    for (std::size_t i = 0; i < iterations.size(); ++i) {
        const auto iteration = iterations[i];
        const auto o = options_for(options, iteration);
        auto share = next.get();
        if (i + 1 < iterations.size()) next = share_of(iterations[i + 1]);
        try {
            const auto s = convert(comm, o, std::move(share), plan);
            run.converted.push_back(iteration);
            if (root) log_done(s, o.format == "hdf5" ? o.output + ":" + s.hdf5_group : o.output);
        } catch (const exchange::PeersLost&) {
            throw;
        } catch (const Error& e) {
            if (stop_signal()) throw;
            std::fprintf(stderr, "megatron2hf: error: %s\n", e.what());
            run.failed.push_back(iteration);
        } catch (const exchange::PeerFailed&) {
            if (stop_signal()) throw;
            run.failed.push_back(iteration);
        }
    }
    if (root)
        spdlog::info("converted {} of {} iteration(s){}", run.converted.size(), iterations.size(),
                     run.failed.empty() ? "" : "; failed: " + join(run.failed));
    return run;
}

}  // namespace m2h::pipeline
