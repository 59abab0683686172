// Reader and writer of Megatron's .idx/.bin. All multi-byte fields are little-endian and, in the
// .idx, unaligned (the arrays start at byte 34), so they are read with memcpy.
#include "data/indexed_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace tessera::data {
namespace {

template <typename T>
T Load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Maps a whole file read-only; an empty file maps to nullptr with size 0.
absl::Status MapFile(const std::string& path, const unsigned char** data, size_t* size) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open '", path, "': ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot stat '", path, "': ", std::strerror(err)));
  }
  *size = static_cast<size_t>(st.st_size);
  *data = nullptr;
  if (*size > 0) {
    void* p = ::mmap(nullptr, *size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat("cannot mmap '", path, "': ", std::strerror(err)));
    }
    *data = static_cast<const unsigned char*>(p);
  }
  ::close(fd);
  return absl::OkStatus();
}

bool IsTokenDType(uint8_t code) { return code >= 1 && code <= 8 && code != 6 && code != 7; }

}  // namespace

size_t TokenDTypeSize(uint8_t code) {
  switch (code) {
    case 1:
    case 2:
      return 1;
    case 3:
    case 8:
      return 2;
    case 4:
    case 7:
      return 4;
    case 5:
    case 6:
      return 8;
    default:
      return 0;
  }
}

const char* TokenDTypeName(uint8_t code) {
  switch (code) {
    case 1:
      return "uint8";
    case 2:
      return "int8";
    case 3:
      return "int16";
    case 4:
      return "int32";
    case 5:
      return "int64";
    case 6:
      return "float64";
    case 7:
      return "float32";
    case 8:
      return "uint16";
    default:
      return "unknown";
  }
}

TokenDType TokenDTypeForVocab(int64_t vocab_size) {
  return vocab_size < 65500 ? TokenDType::kUint16 : TokenDType::kInt32;
}

// ---------------------------------------------------------------------------------------------
// Reader

namespace {

absl::Status IndexError(const std::string& idx_path, const std::string& what) {
  return absl::DataLossError(absl::StrCat(idx_path, ": ", what));
}

// The fields of an .idx header, checked against the file's length `n`.
struct IndexHeader {
  uint8_t dtype_code = 0;
  uint64_t sequences = 0;
  uint64_t doc_entries = 0;  // document count + 1
};

absl::StatusOr<IndexHeader> ReadIndexHeader(const unsigned char* idx, size_t n, const std::string& idx_path) {
  if (n < static_cast<size_t>(kIndexHeaderBytes)) {
    return IndexError(idx_path, absl::StrCat("file has ", n, " bytes, shorter than the ", kIndexHeaderBytes,
                                             "-byte header of a Megatron indexed dataset"));
  }
  if (std::memcmp(idx, kIndexMagic, 9) != 0) {
    return IndexError(idx_path,
                      "byte offset 0: magic is not MMIDIDX\\x00\\x00 (not a Megatron indexed dataset index)");
  }
  const uint64_t version = Load<uint64_t>(idx + 9);
  if (version != 1)
    return IndexError(idx_path, absl::StrCat("byte offset 9: version ", version, ", expected 1"));
  const uint8_t code = idx[17];
  if (TokenDTypeSize(code) == 0) {
    return IndexError(
        idx_path,
        absl::StrCat(
            "byte offset 17: unknown dtype code ", static_cast<int>(code),
            " (expected 1-8: uint8 1, int8 2, int16 3, int32 4, int64 5, float64 6, float32 7, uint16 8)"));
  }
  if (!IsTokenDType(code)) {
    return IndexError(idx_path, absl::StrCat("byte offset 17: dtype ", TokenDTypeName(code),
                                             " is not an integer type; token datasets need integer tokens"));
  }
  const uint64_t s = Load<uint64_t>(idx + 18);
  const uint64_t d = Load<uint64_t>(idx + 26);
  // Compare in 128-bit arithmetic so that absurd counts cannot overflow into a match.
  const unsigned __int128 expected = static_cast<unsigned __int128>(kIndexHeaderBytes) +
                                     static_cast<unsigned __int128>(s) * 12 +
                                     static_cast<unsigned __int128>(d) * 8;
  if (expected != n) {
    return IndexError(
        idx_path,
        absl::StrCat("sequence count ", s, " (byte offset 18) and document count + 1 = ", d,
                     " (byte offset 26) need a file of 34 + 12*", s, " + 8*", d, " bytes, but it has ", n));
  }
  if (d < 1) return IndexError(idx_path, "byte offset 26: document count + 1 is 0, expected at least 1");
  return IndexHeader{code, s, d};
}

// Checks that every sequence starts where the previous one ends in the .bin and ends within its
// `bin_size` bytes; sets *total_tokens and *bin_bytes (what the sequences need). Stopping at the
// first sequence past the end keeps the running sums below bin_size, so they cannot overflow
// however many sequences the index claims.
absl::Status CheckSequences(const unsigned char* idx, uint64_t s, size_t item_size, uint64_t bin_size,
                            const std::string& idx_path, const std::string& bin_path, int64_t* total_tokens,
                            int64_t* bin_bytes) {
  const unsigned char* sizes = idx + kIndexHeaderBytes;
  const unsigned char* pointers = sizes + 4 * s;
  int64_t expected_pointer = 0;
  for (uint64_t i = 0; i < s; ++i) {
    const int32_t len = Load<int32_t>(sizes + 4 * i);
    if (len < 0) {
      return IndexError(idx_path, absl::StrCat("byte offset ", kIndexHeaderBytes + 4 * i, ": sequence ", i,
                                               " has negative length ", len));
    }
    const int64_t ptr = Load<int64_t>(pointers + 8 * i);
    if (ptr != expected_pointer) {
      return IndexError(idx_path,
                        absl::StrCat("byte offset ", kIndexHeaderBytes + 4 * s + 8 * i, ": sequence ", i,
                                     " starts at .bin byte ", ptr, ", expected ", expected_pointer,
                                     " (the previous sequences' lengths times ", item_size, ")"));
    }
    const uint64_t end = static_cast<uint64_t>(expected_pointer) + static_cast<uint64_t>(len) * item_size;
    if (end > bin_size) {
      return IndexError(idx_path,
                        absl::StrCat("byte offset ", kIndexHeaderBytes + 4 * i, ": sequence ", i, " of ", len,
                                     " tokens ends at .bin byte ", end, ", past the ", bin_size, " bytes of ",
                                     bin_path, " (truncated .bin, or .idx and .bin from different runs)"));
    }
    expected_pointer = static_cast<int64_t>(end);
    *total_tokens += len;
  }
  *bin_bytes = expected_pointer;
  return absl::OkStatus();
}

// Checks the document index: starts at 0, never decreases, ends at the sequence count.
absl::Status CheckDocumentIndex(const unsigned char* idx, uint64_t s, uint64_t d,
                                const std::string& idx_path) {
  const unsigned char* docs = idx + kIndexHeaderBytes + 12 * s;
  int64_t previous = 0;
  for (uint64_t k = 0; k < d; ++k) {
    const int64_t v = Load<int64_t>(docs + 8 * k);
    const uint64_t at = kIndexHeaderBytes + 12 * s + 8 * k;
    if (k == 0 && v != 0) {
      return IndexError(idx_path,
                        absl::StrCat("byte offset ", at, ": first document index is ", v, ", expected 0"));
    }
    if (v < previous || v > static_cast<int64_t>(s)) {
      return IndexError(idx_path,
                        absl::StrCat("byte offset ", at, ": document index ", k, " is ", v,
                                     ", expected a non-decreasing value in [", previous, ", ", s, "]"));
    }
    previous = v;
  }
  if (previous != static_cast<int64_t>(s)) {
    return IndexError(idx_path,
                      absl::StrCat("last document index is ", previous, ", expected the sequence count ", s));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<IndexedDataset>> IndexedDataset::Open(const std::string& prefix) {
  std::unique_ptr<IndexedDataset> ds(new IndexedDataset());
  ds->prefix_ = prefix;
  const std::string idx_path = prefix + ".idx", bin_path = prefix + ".bin";
  TS_RETURN_IF_ERROR(MapFile(idx_path, &ds->idx_, &ds->idx_size_));
  TS_RETURN_IF_ERROR(MapFile(bin_path, &ds->bin_, &ds->bin_size_));
  TS_ASSIGN_OR_RETURN(const IndexHeader header, ReadIndexHeader(ds->idx_, ds->idx_size_, idx_path));
  ds->dtype_ = static_cast<TokenDType>(header.dtype_code);
  ds->item_size_ = TokenDTypeSize(header.dtype_code);
  ds->num_sequences_ = static_cast<int64_t>(header.sequences);
  ds->num_doc_entries_ = static_cast<int64_t>(header.doc_entries);
  int64_t bin_bytes = 0;
  TS_RETURN_IF_ERROR(CheckSequences(ds->idx_, header.sequences, ds->item_size_, ds->bin_size_, idx_path,
                                    bin_path, &ds->total_tokens_, &bin_bytes));
  if (static_cast<uint64_t>(bin_bytes) != ds->bin_size_) {
    return absl::DataLossError(absl::StrCat(
        bin_path, ": has ", ds->bin_size_, " bytes but ", idx_path, " describes ", header.sequences,
        " sequences of ", ds->total_tokens_, " ", TokenDTypeName(header.dtype_code), " tokens = ", bin_bytes,
        " bytes (truncated .bin, or .idx and .bin from different runs)"));
  }
  TS_RETURN_IF_ERROR(CheckDocumentIndex(ds->idx_, header.sequences, header.doc_entries, idx_path));
  return ds;
}

IndexedDataset::~IndexedDataset() {
  if (idx_) ::munmap(const_cast<unsigned char*>(idx_), idx_size_);
  if (bin_) ::munmap(const_cast<unsigned char*>(bin_), bin_size_);
}

int64_t IndexedDataset::sequence_length(int64_t i) const {
  return Load<int32_t>(idx_ + kIndexHeaderBytes + 4 * i);
}

int64_t IndexedDataset::sequence_start(int64_t i) const {
  if (i == num_sequences_) return total_tokens_;
  return Load<int64_t>(idx_ + kIndexHeaderBytes + 4 * num_sequences_ + 8 * i) /
         static_cast<int64_t>(item_size_);
}

int64_t IndexedDataset::document_index(int64_t d) const {
  return Load<int64_t>(idx_ + kIndexHeaderBytes + 12 * num_sequences_ + 8 * d);
}

absl::Status IndexedDataset::ReadTokens(int64_t start, int64_t count, int32_t* out) const {
  // Compared without forming start + count, which may not fit int64.
  if (start < 0 || count < 0 || start > total_tokens_ || count > total_tokens_ - start) {
    return absl::OutOfRangeError(absl::StrCat(prefix_, ".bin: ", count, " tokens from token ", start,
                                              " are outside its ", total_tokens_, " tokens"));
  }
  const unsigned char* p = bin_ + start * static_cast<int64_t>(item_size_);
  switch (dtype_) {
    case TokenDType::kUint16:
      for (int64_t i = 0; i < count; ++i) out[i] = Load<uint16_t>(p + 2 * i);
      break;
    case TokenDType::kInt32:
      std::memcpy(out, p, count * 4);
      break;
    case TokenDType::kUint8:
      for (int64_t i = 0; i < count; ++i) out[i] = p[i];
      break;
    case TokenDType::kInt8:
      for (int64_t i = 0; i < count; ++i) out[i] = static_cast<int8_t>(p[i]);
      break;
    case TokenDType::kInt16:
      for (int64_t i = 0; i < count; ++i) out[i] = Load<int16_t>(p + 2 * i);
      break;
    case TokenDType::kInt64:
      for (int64_t i = 0; i < count; ++i) {
        const int64_t v = Load<int64_t>(p + 8 * i);
        if (v < INT32_MIN || v > INT32_MAX) {
          return absl::DataLossError(absl::StrCat(prefix_, ".bin: token ", start + i, " (byte offset ",
                                                  (start + i) * 8, ") is ", v, ", outside the int32 range"));
        }
        out[i] = static_cast<int32_t>(v);
      }
      break;
    default:
      return absl::InternalError("float dtype in an open token dataset");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Writer

absl::StatusOr<std::unique_ptr<IndexedDatasetWriter>> IndexedDatasetWriter::Create(const std::string& prefix,
                                                                                   TokenDType dtype) {
  const uint8_t code = static_cast<uint8_t>(dtype);
  if (!IsTokenDType(code)) return absl::InvalidArgumentError("the writer supports integer dtypes only");
  std::unique_ptr<IndexedDatasetWriter> w(new IndexedDatasetWriter());
  w->prefix_ = prefix;
  w->dtype_ = dtype;
  w->item_size_ = TokenDTypeSize(code);
  w->bin_tmp_ = absl::StrCat(prefix, ".bin.tmp.", ::getpid());
  w->sizes_tmp_ = absl::StrCat(prefix, ".sizes.tmp.", ::getpid());
  w->bin_ = std::fopen(w->bin_tmp_.c_str(), "wb");
  if (!w->bin_)
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create '", w->bin_tmp_, "': ", std::strerror(errno)));
  w->sizes_ = std::fopen(w->sizes_tmp_.c_str(), "w+b");
  if (!w->sizes_)
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create '", w->sizes_tmp_, "': ", std::strerror(errno)));
  return w;
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (bin_) std::fclose(bin_);
  if (sizes_) std::fclose(sizes_);
  if (!sizes_tmp_.empty()) ::unlink(sizes_tmp_.c_str());
  if (!finished_ && !bin_tmp_.empty()) ::unlink(bin_tmp_.c_str());
}

absl::Status IndexedDatasetWriter::AddDocument(absl::Span<const int32_t> tokens) {
  if (tokens.size() > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("document ", documents_, " has ", tokens.size(),
                                                   " tokens; Megatron's .idx stores lengths as int32"));
  }
  buffer_.resize(tokens.size() * item_size_);
  char* out = buffer_.data();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t t = tokens[i];
    switch (dtype_) {
      case TokenDType::kUint16: {
        if (t < 0 || t > 65535) {
          return absl::InvalidArgumentError(
              absl::StrCat("document ", documents_, ": token ", t, " does not fit the uint16 dtype"));
        }
        const uint16_t v = static_cast<uint16_t>(t);
        std::memcpy(out + 2 * i, &v, 2);
        break;
      }
      case TokenDType::kInt32:
        std::memcpy(out + 4 * i, &t, 4);
        break;
      case TokenDType::kInt64: {
        const int64_t v = t;
        std::memcpy(out + 8 * i, &v, 8);
        break;
      }
      case TokenDType::kUint8:
      case TokenDType::kInt8:
      case TokenDType::kInt16: {
        const bool is_unsigned = dtype_ == TokenDType::kUint8;
        const int64_t lo = is_unsigned ? 0 : (dtype_ == TokenDType::kInt8 ? -128 : -32768);
        const int64_t hi = is_unsigned ? 255 : (dtype_ == TokenDType::kInt8 ? 127 : 32767);
        if (t < lo || t > hi) {
          return absl::InvalidArgumentError(absl::StrCat("document ", documents_, ": token ", t,
                                                         " does not fit ",
                                                         TokenDTypeName(static_cast<uint8_t>(dtype_))));
        }
        if (item_size_ == 1) {
          out[i] = static_cast<char>(t);
        } else {
          const int16_t v = static_cast<int16_t>(t);
          std::memcpy(out + 2 * i, &v, 2);
        }
        break;
      }
      default:
        return absl::InternalError("float dtype in the writer");
    }
  }
  const int32_t len = static_cast<int32_t>(tokens.size());
  if (std::fwrite(buffer_.data(), 1, buffer_.size(), bin_) != buffer_.size() ||
      std::fwrite(&len, 4, 1, sizes_) != 1) {
    return absl::ResourceExhaustedError(
        absl::StrCat("writing '", bin_tmp_, "' failed: ", std::strerror(errno)));
  }
  ++documents_;
  tokens_ += len;
  return absl::OkStatus();
}

absl::Status IndexedDatasetWriter::Finish() {
  if (finished_) return absl::FailedPreconditionError("Finish() called twice");
  if (std::fflush(bin_) != 0 || ::fsync(::fileno(bin_)) != 0 || std::fclose(bin_) != 0) {
    bin_ = nullptr;
    return absl::DataLossError(absl::StrCat("flushing '", bin_tmp_, "' failed: ", std::strerror(errno)));
  }
  bin_ = nullptr;
  if (std::fflush(sizes_) != 0 || std::fseek(sizes_, 0, SEEK_SET) != 0) {
    return absl::DataLossError(absl::StrCat("rereading '", sizes_tmp_, "' failed"));
  }
  // The .idx: header, lengths, byte offsets, document indices 0..N. Built in pieces from the
  // streamed lengths.
  const std::string idx_tmp = absl::StrCat(prefix_, ".idx.tmp.", ::getpid());
  std::FILE* idx = std::fopen(idx_tmp.c_str(), "wb");
  if (!idx)
    return absl::PermissionDeniedError(absl::StrCat("cannot create '", idx_tmp, "': ", std::strerror(errno)));
  bool ok = true;
  auto put = [&](const void* p, size_t n) { ok = ok && std::fwrite(p, 1, n, idx) == n; };
  const uint64_t version = 1, s = static_cast<uint64_t>(documents_), d = s + 1;
  const uint8_t code = static_cast<uint8_t>(dtype_);
  put(kIndexMagic, 9);
  put(&version, 8);
  put(&code, 1);
  put(&s, 8);
  put(&d, 8);
  std::vector<int32_t> chunk(1 << 16);
  for (int pass = 0; pass < 2 && ok; ++pass) {
    if (std::fseek(sizes_, 0, SEEK_SET) != 0) ok = false;
    int64_t offset = 0;
    size_t n;
    while (ok && (n = std::fread(chunk.data(), 4, chunk.size(), sizes_)) > 0) {
      if (pass == 0) {
        put(chunk.data(), 4 * n);
      } else {
        for (size_t i = 0; i < n; ++i) {
          put(&offset, 8);
          offset += static_cast<int64_t>(chunk[i]) * static_cast<int64_t>(item_size_);
        }
      }
    }
  }
  for (uint64_t k = 0; k <= s && ok; ++k) {
    const int64_t v = static_cast<int64_t>(k);
    put(&v, 8);
  }
  ok = ok && std::fflush(idx) == 0 && ::fsync(::fileno(idx)) == 0;
  ok = (std::fclose(idx) == 0) && ok;
  if (!ok) {
    ::unlink(idx_tmp.c_str());
    return absl::DataLossError(absl::StrCat("writing '", idx_tmp, "' failed: ", std::strerror(errno)));
  }
  // .bin first, .idx last: a reader that finds the .idx finds a complete .bin beside it.
  const std::string bin_path = prefix_ + ".bin", idx_path = prefix_ + ".idx";
  if (::rename(bin_tmp_.c_str(), bin_path.c_str()) != 0 || ::rename(idx_tmp.c_str(), idx_path.c_str()) != 0) {
    const int err = errno;
    ::unlink(idx_tmp.c_str());
    return absl::InternalError(
        absl::StrCat("publishing '", prefix_, ".{bin,idx}' failed: ", std::strerror(err)));
  }
  finished_ = true;
  return absl::OkStatus();
}

void EncodeIndexedDataset(const std::vector<std::vector<int32_t>>& documents, TokenDType dtype,
                          std::string* bin, std::string* idx) {
  const size_t item = TokenDTypeSize(static_cast<uint8_t>(dtype));
  bin->clear();
  idx->clear();
  auto append = [](std::string* s, const void* p, size_t n) { s->append(static_cast<const char*>(p), n); };
  for (const auto& doc : documents) {
    for (int32_t t : doc) {
      const int64_t v = t;  // little-endian: the low `item` bytes are the value
      append(bin, &v, item);
    }
  }
  const uint64_t version = 1, s = documents.size(), d = s + 1;
  const uint8_t code = static_cast<uint8_t>(dtype);
  append(idx, kIndexMagic, 9);
  append(idx, &version, 8);
  append(idx, &code, 1);
  append(idx, &s, 8);
  append(idx, &d, 8);
  for (const auto& doc : documents) {
    const int32_t len = static_cast<int32_t>(doc.size());
    append(idx, &len, 4);
  }
  int64_t offset = 0;
  for (const auto& doc : documents) {
    append(idx, &offset, 8);
    offset += static_cast<int64_t>(doc.size() * item);
  }
  for (uint64_t k = 0; k <= s; ++k) {
    const int64_t v = static_cast<int64_t>(k);
    append(idx, &v, 8);
  }
}

absl::StatusOr<std::vector<std::string>> FindShardPrefixes(const std::string& prefix) {
  if (PathExists(prefix + ".idx")) return std::vector<std::string>{prefix};
  std::vector<std::string> shards;
  for (int i = 0;; ++i) {
    const std::string shard = absl::StrFormat("%s_%05d", prefix, i);
    if (!PathExists(shard + ".idx")) break;
    shards.push_back(shard);
  }
  if (shards.empty()) {
    return absl::NotFoundError(absl::StrCat("no indexed dataset at '", prefix, "': neither ", prefix,
                                            ".idx nor ", prefix,
                                            "_00000.idx exists (run `tessera preprocess` first)"));
  }
  return shards;
}

}  // namespace tessera::data
