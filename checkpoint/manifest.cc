// Conversion between the plain manifest structs and checkpoint.proto, validation, and the merge
// of the ranks' reports. This is the only file that includes the generated Protobuf code.
#include "checkpoint/manifest.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <unordered_map>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/checkpoint.pb.h"
#include "core/checked_math.h"
#include "core/crc32c.h"
#include "core/status_macros.h"

namespace tessera::checkpoint {
namespace {

namespace pb = ::tessera::checkpoint::proto;

constexpr uint32_t kFirstVersionWithCrc = 2;
constexpr uint8_t kCrcFieldTag = (12 << 3) | 5;  // Manifest.manifest_crc32c, fixed32

struct DTypeInfo {
  DType dtype;
  pb::DType proto;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::kFloat32, pb::FLOAT32, "float32", 4}, {DType::kBFloat16, pb::BFLOAT16, "bfloat16", 2},
    {DType::kFloat16, pb::FLOAT16, "float16", 2}, {DType::kFloat64, pb::FLOAT64, "float64", 8},
    {DType::kInt64, pb::INT64, "int64", 8},       {DType::kInt32, pb::INT32, "int32", 4},
    {DType::kInt16, pb::INT16, "int16", 2},       {DType::kInt8, pb::INT8, "int8", 1},
    {DType::kUInt8, pb::UINT8, "uint8", 1},       {DType::kBool, pb::BOOL, "bool", 1},
};

const DTypeInfo& Info(DType d) {
  for (const DTypeInfo& i : kDTypes) {
    if (i.dtype == d) return i;
  }
  return kDTypes[0];
}

void RegionToProto(const Region& r, pb::Shard* s) {
  if (r.kind == Region::Kind::kFlat) {
    s->mutable_flat()->set_begin(r.flat_begin);
    s->mutable_flat()->set_count(r.flat_count);
  } else {
    pb::Box* box = s->mutable_box();
    for (int64_t v : r.offset) box->add_offset(v);
    for (int64_t v : r.shape) box->add_shape(v);
  }
}

void TensorToProto(const TensorEntry& t, pb::TensorEntry* p) {
  p->set_name(t.name);
  p->set_dtype(Info(t.dtype).proto);
  for (int64_t v : t.global_shape) p->add_global_shape(v);
  for (const ShardRecord& s : t.shards) {
    pb::Shard* ps = p->add_shards();
    ps->set_file(s.file);
    ps->set_byte_offset(s.byte_offset);
    ps->set_byte_length(s.byte_length);
    RegionToProto(s.region, ps);
    ps->set_crc32c(s.crc32c);
    ps->set_rank(s.rank);
  }
}

void BlobToProto(const BlobEntry& b, pb::BlobEntry* p) {
  p->set_name(b.name);
  p->set_file(b.file);
  p->set_offset(b.offset);
  p->set_length(b.length);
  p->set_crc32c(b.crc32c);
  p->set_rank(b.rank);
}

void FileToProto(const ShardFileEntry& f, pb::ShardFile* p) {
  p->set_name(f.name);
  p->set_length(f.length);
  p->set_rank(f.rank);
}

absl::StatusOr<TensorEntry> TensorFromProto(const pb::TensorEntry& p, const std::string& source) {
  TensorEntry t;
  t.name = p.name();
  bool known = false;
  for (const DTypeInfo& i : kDTypes) {
    if (i.proto == p.dtype()) {
      t.dtype = i.dtype;
      known = true;
    }
  }
  if (!known) {
    return absl::DataLossError(
        absl::StrCat(source, ": tensor '", p.name(), "' has unknown dtype ", static_cast<int>(p.dtype())));
  }
  t.global_shape.assign(p.global_shape().begin(), p.global_shape().end());
  for (const pb::Shard& ps : p.shards()) {
    ShardRecord s;
    s.file = ps.file();
    s.byte_offset = ps.byte_offset();
    s.byte_length = ps.byte_length();
    if (ps.has_flat()) {
      s.region = Region::Flat(ps.flat().begin(), ps.flat().count());
    } else if (ps.has_box()) {
      s.region = Region::Box({ps.box().offset().begin(), ps.box().offset().end()},
                             {ps.box().shape().begin(), ps.box().shape().end()});
    } else {
      return absl::DataLossError(
          absl::StrCat(source, ": a shard of tensor '", p.name(), "' in ", ps.file(), " has no region"));
    }
    s.crc32c = ps.crc32c();
    s.rank = ps.rank();
    t.shards.push_back(std::move(s));
  }
  return t;
}

BlobEntry BlobFromProto(const pb::BlobEntry& p) {
  return BlobEntry{p.name(), p.file(), p.offset(), p.length(), p.crc32c(), p.rank()};
}

ShardFileEntry FileFromProto(const pb::ShardFile& p) {
  return ShardFileEntry{p.name(), p.length(), p.rank()};
}

bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

// Each element covered exactly once by the distinct regions of a tensor.
absl::Status CheckCoverage(const TensorEntry& t, const std::string& source) {
  const std::string what = absl::StrCat(source, ": tensor '", t.name, "'");
  std::vector<const ShardRecord*> distinct;
  for (const ShardRecord& s : t.shards) {
    if (s.region.kind != t.shards.front().region.kind) {
      return absl::DataLossError(absl::StrCat(what, " mixes box and flat-range shards (ranks ",
                                              t.shards.front().rank, " and ", s.rank,
                                              "); a tensor is saved one way"));
    }
    if (std::none_of(distinct.begin(), distinct.end(),
                     [&](const ShardRecord* d) { return d->region == s.region; })) {
      distinct.push_back(&s);
    }
  }
  // Distinct regions may still overlap (reported below), so their sum can exceed any bound.
  int64_t covered = 0;
  for (const ShardRecord* d : distinct) covered = CheckedAdd(covered, d->region.numel()).value_or(INT64_MAX);
  const int64_t numel = NumElements(t.global_shape);
  // Sort so that only neighbours along the first dimension (or the flat range) need comparing.
  auto first = [](const ShardRecord* s) {
    return s->region.kind == Region::Kind::kFlat ? s->region.flat_begin
                                                 : (s->region.offset.empty() ? 0 : s->region.offset[0]);
  };
  auto last = [](const ShardRecord* s) {
    return s->region.kind == Region::Kind::kFlat
               ? s->region.flat_begin + s->region.flat_count
               : (s->region.offset.empty() ? 1 : s->region.offset[0] + s->region.shape[0]);
  };
  std::sort(distinct.begin(), distinct.end(),
            [&](const ShardRecord* a, const ShardRecord* b) { return first(a) < first(b); });
  for (size_t i = 0; i < distinct.size(); ++i) {
    for (size_t j = i + 1; j < distinct.size() && first(distinct[j]) < last(distinct[i]); ++j) {
      if (Overlaps(distinct[i]->region, distinct[j]->region, t.global_shape)) {
        return absl::DataLossError(
            absl::StrCat(what, ": the shards of ranks ", distinct[i]->rank, " and ", distinct[j]->rank,
                         " overlap (", distinct[i]->region.ToString(), " and ",
                         distinct[j]->region.ToString(), ") without being identical copies"));
      }
    }
  }
  if (covered != numel) {
    return absl::DataLossError(absl::StrCat(what, " of shape ", ShapeToString(t.global_shape), " has ", numel,
                                            " elements but its shards cover ", covered,
                                            ": every element must be saved by some rank"));
  }
  return absl::OkStatus();
}

}  // namespace

size_t DTypeSize(DType dtype) { return Info(dtype).size; }
const char* DTypeName(DType dtype) { return Info(dtype).name; }

absl::StatusOr<DType> DTypeFromName(std::string_view name) {
  for (const DTypeInfo& i : kDTypes) {
    if (name == i.name) return i.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", std::string(name), "'"));
}

const TensorEntry* Manifest::FindTensor(std::string_view name) const {
  for (const TensorEntry& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const BlobEntry* Manifest::FindBlob(std::string_view name) const {
  for (const BlobEntry& b : blobs) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

std::string SerializeManifest(const Manifest& m) {
  pb::Manifest p;
  p.set_format_version(m.format_version);
  p.set_step(m.step);
  p.set_consumed_samples(m.consumed_samples);
  p.set_data_position(m.data_position);
  p.set_config_yaml(m.config_yaml);
  pb::Layout* l = p.mutable_layout();
  l->set_world_size(m.layout.world_size);
  l->set_tp(m.layout.tp);
  l->set_pp(m.layout.pp);
  l->set_dp(m.layout.dp);
  l->set_zero(m.layout.zero);
  l->set_virtual_stages(m.layout.virtual_stages);
  p.set_created_unix_time(m.created_unix_time);
  for (const TensorEntry& t : m.tensors) TensorToProto(t, p.add_tensors());
  for (const BlobEntry& b : m.blobs) BlobToProto(b, p.add_blobs());
  for (const ShardFileEntry& f : m.files) FileToProto(f, p.add_files());
  p.set_writer(m.writer);
  // Deterministic bytes: the same manifest always serializes the same way.
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    p.SerializeToCodedStream(&coded);
  }
  if (m.format_version >= kFirstVersionWithCrc) {
    // Appended by hand rather than set on the message: proto3 would omit a CRC that happens to
    // be zero, and the reader relies on the field being exactly the last 5 bytes.
    const uint32_t crc = Crc32c(out);
    out.push_back(static_cast<char>(kCrcFieldTag));
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  }
  return out;
}

namespace {

// Version 2 files end with Manifest.manifest_crc32c: field 12, wire type 5 (fixed32).
absl::Status CheckManifestCrc(std::string_view bytes, uint32_t format_version, const std::string& source) {
  constexpr size_t kTrailer = 5;  // tag byte + fixed32
  const bool has_trailer =
      bytes.size() >= kTrailer && static_cast<uint8_t>(bytes[bytes.size() - kTrailer]) == kCrcFieldTag;
  if (format_version < kFirstVersionWithCrc) return absl::OkStatus();  // written before the CRC existed
  if (!has_trailer) {
    return absl::DataLossError(absl::StrCat(
        source, ": manifest (format version ", format_version,
        ") does not end with its CRC-32C field: the file is truncated or was not written by Tessera"));
  }
  const std::string_view body = bytes.substr(0, bytes.size() - kTrailer);
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) {
    stored |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[bytes.size() - 4 + i])) << (8 * i);
  }
  const uint32_t computed = Crc32c(body);
  if (stored != computed) {
    return absl::DataLossError(absl::StrFormat(
        "%s: manifest checksum mismatch: stored CRC-32C 0x%08x, computed 0x%08x over its first %d bytes: "
        "the manifest is corrupted; use an earlier checkpoint",
        source, stored, computed, body.size()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Manifest> ParseManifest(std::string_view bytes, const std::string& source) {
  pb::Manifest p;
  if (!p.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError(
        absl::StrCat(source, ": not a valid manifest (", bytes.size(),
                     " bytes that do not parse as tessera.checkpoint.proto.Manifest)"));
  }
  Manifest m;
  m.format_version = p.format_version();
  m.step = p.step();
  m.consumed_samples = p.consumed_samples();
  m.data_position = p.data_position();
  m.config_yaml = p.config_yaml();
  m.layout = Layout{p.layout().world_size(), p.layout().tp(),   p.layout().pp(),
                    p.layout().dp(),         p.layout().zero(), p.layout().virtual_stages()};
  m.created_unix_time = p.created_unix_time();
  m.writer = p.writer();
  // The version first: a newer format may not even have the fields checked below. Then the
  // manifest's own checksum, before any of its sizes or offsets are believed.
  {
    Manifest version_only;
    version_only.format_version = m.format_version;
    TS_RETURN_IF_ERROR(ValidateManifest(version_only, source));
  }
  TS_RETURN_IF_ERROR(CheckManifestCrc(bytes, m.format_version, source));
  for (const pb::TensorEntry& t : p.tensors()) {
    TS_ASSIGN_OR_RETURN(TensorEntry entry, TensorFromProto(t, source));
    m.tensors.push_back(std::move(entry));
  }
  for (const pb::BlobEntry& b : p.blobs()) m.blobs.push_back(BlobFromProto(b));
  for (const pb::ShardFile& f : p.files()) m.files.push_back(FileFromProto(f));
  TS_RETURN_IF_ERROR(ValidateManifest(m, source));
  return m;
}

absl::Status ValidateManifest(const Manifest& m, const std::string& source) {
  if (m.format_version == 0) {
    return absl::DataLossError(
        absl::StrCat(source, ": manifest has no format version (not a Tessera manifest)"));
  }
  if (m.format_version > kManifestFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(source, ": manifest format version ", m.format_version,
                     " is newer than this Tessera reads (up to ", kManifestFormatVersion,
                     "): the checkpoint was written by a newer Tessera; read it with that version"));
  }
  std::unordered_map<std::string, uint64_t> file_length;
  for (const ShardFileEntry& f : m.files) {
    if (!IsPlainFileName(f.name)) {
      return absl::DataLossError(absl::StrCat(source, ": shard file name '", f.name,
                                              "' is not a plain file name inside the step directory"));
    }
    if (!file_length.emplace(f.name, f.length).second) {
      return absl::DataLossError(absl::StrCat(source, ": shard file '", f.name, "' is listed twice"));
    }
  }
  auto check_range = [&](const std::string& file, uint64_t offset, uint64_t length,
                         const std::string& what) -> absl::Status {
    auto it = file_length.find(file);
    if (it == file_length.end()) {
      return absl::DataLossError(
          absl::StrCat(source, ": ", what, " refers to file '", file, "', which the manifest does not list"));
    }
    if (offset > it->second || length > it->second - offset) {
      // offset + length may not fit in 64 bits; the message gives both as they are.
      return absl::DataLossError(absl::StrCat(source, ": ", what, " has ", length, " bytes at offset ",
                                              offset, ", beyond the ", it->second, " bytes of '", file, "'"));
    }
    return absl::OkStatus();
  };
  std::unordered_map<std::string, int> names;
  for (const TensorEntry& t : m.tensors) {
    if (t.name.empty()) return absl::DataLossError(absl::StrCat(source, ": a tensor has an empty name"));
    if (!names.emplace(t.name, 0).second) {
      return absl::DataLossError(absl::StrCat(source, ": tensor '", t.name, "' is listed twice"));
    }
    // The whole tensor's bytes must fit in int64, so that every shard's count and bytes do too.
    {
      absl::Status st = ValidateShape(t.global_shape, absl::StrCat(source, ": tensor '", t.name, "'"));
      if (!st.ok()) return absl::DataLossError(st.message());
      if (!CheckedByteSize(NumElements(t.global_shape), DTypeSize(t.dtype))) {
        return absl::DataLossError(absl::StrCat(source, ": tensor '", t.name, "' of shape ",
                                                ShapeToString(t.global_shape), " has more ",
                                                DTypeName(t.dtype), " bytes than fit in int64"));
      }
    }
    for (const ShardRecord& s : t.shards) {
      const std::string what =
          absl::StrCat("tensor '", t.name, "' shard ", s.region.ToString(), " (rank ", s.rank, ")");
      {
        absl::Status st = ValidateRegion(s.region, t.global_shape, absl::StrCat(source, ": ", what));
        if (!st.ok()) return absl::DataLossError(st.message());
      }
      const uint64_t expected = static_cast<uint64_t>(s.region.numel()) * DTypeSize(t.dtype);
      if (s.byte_length != expected) {
        return absl::DataLossError(absl::StrCat(source, ": ", what, " has ", s.byte_length, " bytes; ",
                                                s.region.numel(), " ", DTypeName(t.dtype), " elements need ",
                                                expected));
      }
      TS_RETURN_IF_ERROR(check_range(s.file, s.byte_offset, s.byte_length, what));
    }
    TS_RETURN_IF_ERROR(CheckCoverage(t, source));
  }
  std::unordered_map<std::string, int> blob_names;
  for (const BlobEntry& b : m.blobs) {
    if (!blob_names.emplace(b.name, 0).second) {
      return absl::DataLossError(absl::StrCat(source, ": blob '", b.name, "' is listed twice"));
    }
    TS_RETURN_IF_ERROR(check_range(b.file, b.offset, b.length, absl::StrCat("blob '", b.name, "'")));
  }
  return absl::OkStatus();
}

std::string SerializeRankReport(const RankReport& r) {
  pb::RankReport p;
  p.set_rank(r.rank);
  p.set_step(r.step);
  p.set_error(r.error);
  p.set_error_code(r.error_code);
  for (const TensorEntry& t : r.tensors) TensorToProto(t, p.add_tensors());
  for (const BlobEntry& b : r.blobs) BlobToProto(b, p.add_blobs());
  FileToProto(r.file, p.mutable_file());
  return p.SerializeAsString();
}

absl::StatusOr<RankReport> ParseRankReport(std::string_view bytes, int from_rank) {
  pb::RankReport p;
  const std::string source = absl::StrCat("the save report of rank ", from_rank);
  if (!p.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError(absl::StrCat(source, " (", bytes.size(), " bytes) does not parse"));
  }
  RankReport r;
  r.rank = p.rank();
  r.step = p.step();
  r.error = p.error();
  r.error_code = p.error_code();
  for (const pb::TensorEntry& t : p.tensors()) {
    TS_ASSIGN_OR_RETURN(TensorEntry entry, TensorFromProto(t, source));
    r.tensors.push_back(std::move(entry));
  }
  for (const pb::BlobEntry& b : p.blobs()) r.blobs.push_back(BlobFromProto(b));
  r.file = FileFromProto(p.file());
  return r;
}

absl::Status MergeRankReports(const std::vector<RankReport>& reports, Manifest& m,
                              const std::string& source) {
  std::map<std::string, size_t> index;
  for (const RankReport& r : reports) {
    if (r.step != m.step) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", r.rank, " saved step ", r.step,
                                                     " while rank 0 saved step ", m.step,
                                                     ": every rank must save the same step"));
    }
    for (const TensorEntry& t : r.tensors) {
      auto [it, inserted] = index.emplace(t.name, m.tensors.size());
      if (inserted) {
        m.tensors.push_back(t);
        continue;
      }
      TensorEntry& have = m.tensors[it->second];
      if (have.dtype != t.dtype || have.global_shape != t.global_shape) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", t.name, "': rank ", have.shards.empty() ? 0 : have.shards.front().rank,
                         " saved ", DTypeName(have.dtype), " ", ShapeToString(have.global_shape),
                         " but rank ", r.rank, " saved ", DTypeName(t.dtype), " ",
                         ShapeToString(t.global_shape), ": ranks must agree on a logical tensor"));
      }
      have.shards.insert(have.shards.end(), t.shards.begin(), t.shards.end());
    }
    for (const BlobEntry& b : r.blobs) {
      if (const BlobEntry* other = m.FindBlob(b.name)) {
        return absl::InvalidArgumentError(absl::StrCat("blob '", b.name, "' was saved by ranks ", other->rank,
                                                       " and ", r.rank,
                                                       ": blob names must be unique (add the rank)"));
      }
      m.blobs.push_back(b);
    }
    if (!r.file.name.empty()) m.files.push_back(r.file);
  }
  return ValidateManifest(m, source);
}

}  // namespace tessera::checkpoint
