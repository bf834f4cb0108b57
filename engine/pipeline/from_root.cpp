#include "pipeline/from_root.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace m2h::pipeline {

using nlohmann::json;

namespace {

std::vector<std::byte> to_bytes(const json& j) {
    const auto cbor = json::to_cbor(j);
    return {reinterpret_cast<const std::byte*>(cbor.data()), reinterpret_cast<const std::byte*>(cbor.data()) + cbor.size()};
}

json from_bytes(std::span<const std::byte> b) {
    return json::from_cbor(reinterpret_cast<const std::uint8_t*>(b.data()),
                           reinterpret_cast<const std::uint8_t*>(b.data()) + b.size());
}

}  // namespace

json from_root(const exchange::Comm& comm, const std::function<json()>& produce) {
    json result;
    exchange::collective(comm, [&] {
        if (comm.rank() == 0) result = produce();
    });
    std::vector<std::byte> bytes;
    if (comm.rank() == 0) bytes = to_bytes(result);
    comm.broadcast(bytes, 0);
    if (comm.rank() != 0) result = from_bytes(bytes);
    return result;
}

std::vector<json> all_gather_json(const exchange::Comm& comm, const json& mine) {
    std::vector<json> all;
    for (const auto& bytes : comm.all_gather(to_bytes(mine))) all.push_back(from_bytes(bytes));
    return all;
}

}  // namespace m2h::pipeline
