#pragma once
// An OutputSink decorator: checksums the bytes each writer received (per tensor stretch of each window) before
// passing the windows on, for the manifest and --verify.
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "common/crc32c.hpp"
#include "io/output_sink.hpp"
#include "pipeline/manifest.hpp"

namespace m2h::pipeline {

class ChecksumSink final : public io::OutputSink {
public:
    ChecksumSink(io::OutputSink& inner, const plan::OutputLayout& layout, const std::vector<tensors::OutputTensor>& tensors)
        : inner_(inner), layout_(layout), tensors_(tensors) {}

    void write_round(std::size_t round, std::span<const io::WindowBytes> windows) override {
        auto& mine = own_segments();
        for (const auto& w : windows)
            for (const auto& segment : window_segments(layout_, tensors_, *w.window))
                add(mine, segment, *w.window, w.bytes);
        inner_.write_round(round, windows);
    }
    bool concurrent() const override { return inner_.concurrent(); }
    // Once no thread writes any more.
    std::vector<Segment> segments() const {
        std::vector<Segment> all;
        for (const auto& [thread, list] : segments_) all.insert(all.end(), list.begin(), list.end());
        return all;
    }

private:
    // Each writing thread keeps its own list (a concurrent sink is called from two threads at once).
    std::vector<Segment>& own_segments() {
        const std::lock_guard lock(adding_);
        return segments_[std::this_thread::get_id()];
    }

    // A streamed range arrives in many small stretches: a stretch that continues the last segment of its tensor
    // extends that segment's CRC, so the manifest gathers about as many segments as there are windows.
    void add(std::vector<Segment>& segments, Segment s, const plan::Window& window, std::span<const std::byte> bytes) {
        const auto in = bytes.subspan(layout_.placement[s.tensor].offset + s.offset - window.offset, s.length);
        if (!segments.empty()) {
            auto& last = segments.back();
            if (last.tensor == s.tensor && last.offset + last.length == s.offset) {
                last.crc = crc32c(in, last.crc);
                last.length += s.length;
                return;
            }
        }
        s.crc = crc32c(in);
        segments.push_back(s);
    }

    io::OutputSink& inner_;
    const plan::OutputLayout& layout_;
    const std::vector<tensors::OutputTensor>& tensors_;
    std::mutex adding_;
    std::map<std::thread::id, std::vector<Segment>> segments_;  // per writing thread
};

}  // namespace m2h::pipeline
