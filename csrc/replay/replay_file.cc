// ReplayMemory::Save and ::Load: the replay file (format in tfdqn_ops/replay.py's docstring).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <sstream>

#include "replay_memory.h"

namespace tfdqn {

namespace {

// The file format is defined little-endian; this build writes host order.
bool HostIsLittleEndian() {
  const uint16_t probe = 1;
  unsigned char first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

constexpr char kMagic[8] = {'T', 'F', 'D', 'Q', 'N', 'R', 'P', 'L'};
constexpr char kEndMagic[8] = {'T', 'F', 'D', 'Q', 'N', 'E', 'N', 'D'};
// Version 1: DQN 3.0's memory (n_step 1, uniform sampling), still written for it so that
// older builds read those files. Version 2 adds the options, the streams' add counts and,
// for prioritized memories, each stored entry's priority.
constexpr uint32_t kVersion = 1;
constexpr uint32_t kVersionWithOptions = 2;
constexpr uint64_t kMaxHeaderBytes = 1 << 24;
constexpr size_t kIoChunk = size_t{1} << 24;  // 16 MiB per read/write call

}  // namespace

namespace {

std::string ErrnoText(int err) { return std::strerror(err); }

class FileWriter {
 public:
  FileWriter(int fd, const std::string& tmp_path, const std::string& path)
      : fd_(fd), tmp_path_(tmp_path), path_(path) {}

  void Write(const void* data, size_t len) {
    const unsigned char* p = static_cast<const unsigned char*>(data);
    while (len > 0) {
      const ssize_t k = ::write(fd_, p, std::min(len, kIoChunk));
      if (k < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        throw IoError(err, "save: writing " + tmp_path_ + ": " + ErrnoText(err), path_);
      }
      hash_.Update(p, static_cast<size_t>(k));
      p += k;
      len -= static_cast<size_t>(k);
      written_ += k;
    }
  }
  template <typename T>
  void Put(T value) {
    Write(&value, sizeof(T));
  }
  uint64_t Digest() const { return hash_.Digest(); }
  int64_t written() const { return written_; }

 private:
  int fd_;
  std::string tmp_path_;
  std::string path_;
  int64_t written_ = 0;
  Xxh64 hash_;
};

class FileReader {
 public:
  FileReader(int fd, const std::string& path) : fd_(fd), path_(path) {}
  void Read(void* data, size_t len) {
    unsigned char* p = static_cast<unsigned char*>(data);
    while (len > 0) {
      const ssize_t k = ::read(fd_, p, std::min(len, kIoChunk));
      if (k < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        throw IoError(err, "load: reading " + path_ + ": " + ErrnoText(err), path_);
      }
      if (k == 0) {
        throw FormatError("load: " + path_ + ": file is truncated (ended while reading)");
      }
      hash_.Update(p, static_cast<size_t>(k));
      p += k;
      len -= static_cast<size_t>(k);
    }
  }
  template <typename T>
  T Get() {
    T value;
    Read(&value, sizeof(T));
    return value;
  }
  uint64_t Digest() const { return hash_.Digest(); }

 private:
  int fd_;
  std::string path_;
  Xxh64 hash_;
};

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

uint64_t HeaderBytes(uint64_t rank, uint64_t num_envs, uint32_t version) {
  // magic, version, header_bytes; capacity, history, num_envs, rank; dims;
  // rng state; (size, write) per env; [version 2: n_step, discount,
  // priority_exponent, max_priority; added per env]; payload bytes; header checksum.
  const uint64_t v2 = version >= 2 ? 8 * 4 + 8 * num_envs : 0;
  return 8 + 4 + 4 + 8 * 4 + 8 * rank + 8 * 4 + 16 * num_envs + v2 + 8 + 8;
}

uint64_t DoubleBits(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  return bits;
}

double BitsDouble(uint64_t bits) {
  double v;
  std::memcpy(&v, &bits, 8);
  return v;
}

}  // namespace

void ReplayMemory::Save(const std::string& path) const {
  if (!HostIsLittleEndian()) {
    throw std::runtime_error("save: big-endian hosts are not supported");
  }
  if (path.empty()) {
    throw std::invalid_argument("path: expected a file name, got ''");
  }
  const size_t cut = path.find_last_of('/');
  const std::string dir = cut == std::string::npos ? "." : cut == 0 ? "/" : path.substr(0, cut);
  const std::string base = cut == std::string::npos ? path : path.substr(cut + 1);
  if (base.empty()) {
    throw std::invalid_argument("path: '" + path + "' names a directory");
  }
  std::string tmp = dir + "/." + base + ".tmp.XXXXXX";
  std::vector<char> tmpl(tmp.begin(), tmp.end());
  tmpl.push_back('\0');

  std::lock_guard<std::mutex> lock(mu_);
  Fd file;
  file.fd = mkstemp(tmpl.data());
  if (file.fd < 0) {
    const int err = errno;
    throw IoError(err, "save: cannot create a temporary file in " + dir + ": " + ErrnoText(err),
                  path);
  }
  tmp = tmpl.data();
  try {
    fchmod(file.fd, 0644);
    FileWriter out(file.fd, tmp, path);
    const uint64_t rank = frame_shape_.size();
    const uint32_t version =
        options_.n_step == 1 && !prioritized() ? kVersion : kVersionWithOptions;
    const uint64_t header_bytes = HeaderBytes(rank, num_envs_, version);
    uint64_t payload = 0;
    const uint64_t entry_bytes =
        frame_bytes_ + sizeof(int32_t) + sizeof(float) + 1 + (prioritized() ? sizeof(double) : 0);
    for (const Segment& seg : segments_) payload += seg.size * entry_bytes;

    // Header, built in memory so that its own checksum can close it.
    std::string header;
    auto put = [&header](const void* p, size_t n) {
      header.append(static_cast<const char*>(p), n);
    };
    auto put64 = [&put](uint64_t v) { put(&v, 8); };
    put(kMagic, 8);
    const uint32_t hb32 = static_cast<uint32_t>(header_bytes);
    put(&version, 4);
    put(&hb32, 4);
    put64(capacity_);
    put64(history_);
    put64(num_envs_);
    put64(rank);
    for (int64_t d : frame_shape_) put64(d);
    for (uint64_t w : rng_.state()) put64(w);
    for (const Segment& seg : segments_) {
      put64(seg.size);
      put64(seg.write);
    }
    if (version >= kVersionWithOptions) {
      put64(options_.n_step);
      put64(DoubleBits(options_.discount));
      put64(DoubleBits(options_.priority_exponent));
      put64(DoubleBits(max_priority_));
      for (const Segment& seg : segments_) put64(seg.added);
    }
    put64(payload);
    put64(HashXxh64(header.data(), header.size()));
    out.Write(header.data(), header.size());

    // Stored entries of a segment are always its slots [0, size).
    for (const Segment& seg : segments_) {
      out.Write(frames_ + seg.begin * frame_bytes_, seg.size * frame_bytes_);
      out.Write(actions_.data() + seg.begin, seg.size * sizeof(int32_t));
      out.Write(rewards_.data() + seg.begin, seg.size * sizeof(float));
      out.Write(terminals_.data() + seg.begin, seg.size);
      if (prioritized()) out.Write(priorities_.data() + seg.begin, seg.size * sizeof(double));
    }
    const uint64_t digest = out.Digest();
    out.Put(digest);
    out.Write(kEndMagic, 8);

    if (::fsync(file.fd) != 0) {
      const int err = errno;
      throw IoError(err, "save: fsync " + tmp + ": " + ErrnoText(err), path);
    }
    const int fd = file.fd;
    file.fd = -1;
    if (::close(fd) != 0) {
      const int err = errno;
      throw IoError(err, "save: close " + tmp + ": " + ErrnoText(err), path);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      const int err = errno;
      throw IoError(err, "save: rename " + tmp + " -> " + path + ": " + ErrnoText(err), path);
    }
  } catch (...) {
    if (file.fd >= 0) {
      ::close(file.fd);
      file.fd = -1;
    }
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable.
  Fd d;
  d.fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (d.fd >= 0) ::fsync(d.fd);
}

namespace {

// Opens a replay file for reading; returns its size. Missing files, directories and the
// like are IoError (OSError with errno in Python).
uint64_t OpenInput(const std::string& path, Fd& file) {
  file.fd = ::open(path.c_str(), O_RDONLY);
  if (file.fd < 0) {
    const int err = errno;
    throw IoError(err, "load: cannot open " + path + ": " + ErrnoText(err), path);
  }
  struct stat st;
  if (fstat(file.fd, &st) != 0) {
    const int err = errno;
    throw IoError(err, "load: stat " + path + ": " + ErrnoText(err), path);
  }
  if (S_ISDIR(st.st_mode)) {
    throw IoError(EISDIR, "load: " + path + " is a directory", path);
  }
  return static_cast<uint64_t>(st.st_size);
}

// Everything the header says, checked against its checksum and against itself (the
// streams' positions are checked against the memory they describe in AdoptStreams).
struct FileHeader {
  uint32_t version = 0;
  uint32_t header_bytes = 0;
  uint64_t capacity = 0, history = 0, num_envs = 0;
  std::vector<int64_t> frame_shape;
  std::array<uint64_t, 4> rng_state{};
  std::vector<std::array<uint64_t, 2>> positions;  // (size, write position) per stream
  ReplayOptions options;
  double max_priority = 1.0;
  std::vector<uint64_t> added;  // entries ever added, per stream
  uint64_t payload_bytes = 0;
};

FileHeader ReadHeader(FileReader& in, uint64_t file_bytes, const std::string& where) {
  FileHeader h;
  if (file_bytes < 16) {
    // Too short for any header: say whether it even starts like one.
    std::vector<char> head(file_bytes);
    if (file_bytes > 0) in.Read(head.data(), file_bytes);
    const bool prefix =
        file_bytes > 0 && std::memcmp(head.data(), kMagic, std::min<uint64_t>(8, file_bytes)) == 0;
    throw FormatError(where + (prefix
                                   ? "file is truncated (" + std::to_string(file_bytes) + " bytes)"
                                   : "not a tfdqn replay memory file (" +
                                         std::to_string(file_bytes) + " bytes, no magic header)"));
  }
  char magic[8];
  in.Read(magic, 8);
  if (std::memcmp(magic, kMagic, 8) != 0) {
    throw FormatError(where + "not a tfdqn replay memory file (bad magic header)");
  }
  h.version = in.Get<uint32_t>();
  if (h.version != kVersion && h.version != kVersionWithOptions) {
    throw FormatError(where + "unsupported file version " + std::to_string(h.version) +
                      " (this build reads versions " + std::to_string(kVersion) + " and " +
                      std::to_string(kVersionWithOptions) + ")");
  }
  h.header_bytes = in.Get<uint32_t>();
  if (h.header_bytes < HeaderBytes(1, 1, h.version) || h.header_bytes > kMaxHeaderBytes) {
    throw FormatError(where + "corrupted header (header size " + std::to_string(h.header_bytes) +
                      ")");
  }
  if (file_bytes < h.header_bytes) {
    throw FormatError(where + "file is truncated (" + std::to_string(file_bytes) +
                      " bytes, header alone is " + std::to_string(h.header_bytes) + ")");
  }
  std::vector<unsigned char> header(h.header_bytes);
  std::memcpy(header.data(), kMagic, 8);
  std::memcpy(header.data() + 8, &h.version, 4);
  std::memcpy(header.data() + 12, &h.header_bytes, 4);
  in.Read(header.data() + 16, h.header_bytes - 16);
  uint64_t stored_header_hash;
  std::memcpy(&stored_header_hash, header.data() + h.header_bytes - 8, 8);
  if (HashXxh64(header.data(), h.header_bytes - 8) != stored_header_hash) {
    throw FormatError(where + "corrupted header (checksum mismatch)");
  }
  size_t pos = 16;
  auto get64 = [&]() {
    uint64_t v;
    std::memcpy(&v, header.data() + pos, 8);
    pos += 8;
    return v;
  };
  h.capacity = get64();
  h.history = get64();
  h.num_envs = get64();
  const uint64_t rank = get64();
  const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (h.capacity > limit || h.history > limit || h.num_envs == 0 || h.num_envs > limit ||
      rank == 0 || rank > kMaxHeaderBytes ||
      HeaderBytes(rank, h.num_envs, h.version) != h.header_bytes) {
    throw FormatError(where + "corrupted header (inconsistent sizes)");
  }
  h.frame_shape.resize(rank);
  for (auto& d : h.frame_shape) {
    const uint64_t v = get64();
    if (v > limit) throw FormatError(where + "corrupted header (frame shape)");
    d = static_cast<int64_t>(v);
  }
  for (auto& w : h.rng_state) w = get64();
  // The streams' sizes and write positions come before the options in the file.
  h.positions.resize(h.num_envs);
  for (auto& p : h.positions) p = {get64(), get64()};
  h.added.resize(h.num_envs);
  if (h.version >= kVersionWithOptions) {
    const uint64_t n_step = get64();
    h.options.n_step = n_step > limit ? -1 : static_cast<int64_t>(n_step);
    h.options.discount = BitsDouble(get64());
    h.options.priority_exponent = BitsDouble(get64());
    h.max_priority = BitsDouble(get64());
    for (auto& a : h.added) a = get64();
    if (!(h.max_priority > 0.0) || !std::isfinite(h.max_priority)) {
      throw FormatError(where + "corrupted header (max priority)");
    }
  } else {
    for (uint64_t e = 0; e < h.num_envs; ++e) h.added[e] = h.positions[e][0];
  }
  h.payload_bytes = get64();
  return h;
}

}  // namespace

uint64_t ReplayMemory::AdoptStreams(const std::vector<std::array<uint64_t, 2>>& positions,
                                    const std::vector<uint64_t>& added, const std::string& where) {
  const uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  const uint64_t entry_bytes =
      frame_bytes_ + sizeof(int32_t) + sizeof(float) + 1 + (prioritized() ? sizeof(double) : 0);
  uint64_t payload = 0;
  for (size_t e = 0; e < segments_.size(); ++e) {
    Segment& seg = segments_[e];
    const uint64_t size = positions[e][0];
    const uint64_t write = positions[e][1];
    const uint64_t cap = static_cast<uint64_t>(seg.capacity);
    const bool consistent = size <= cap && (size < cap ? write == size : write < cap);
    if (!consistent) {
      throw FormatError(where + "corrupted header (stream size " + std::to_string(size) +
                        ", write position " + std::to_string(write) + ", capacity " +
                        std::to_string(cap) + ")");
    }
    if (added[e] < size || added[e] > limit) {
      throw FormatError(where + "corrupted header (stream add count)");
    }
    seg.size = static_cast<int64_t>(size);
    seg.write = static_cast<int64_t>(write);
    seg.added = static_cast<int64_t>(added[e]);
    payload += size * entry_bytes;
  }
  return payload;
}

void ReplayMemory::CheckLoadedEntries(const std::string& where) {
  for (Segment& seg : segments_) {
    for (int64_t k = 0; k < seg.size; ++k) {
      const int64_t slot = seg.begin + k;
      if (terminals_[slot] > 1 || actions_[slot] < 0 || !std::isfinite(rewards_[slot])) {
        throw FormatError(where + "corrupted contents (entry " + std::to_string(slot) + ")");
      }
      seg.terminals += terminals_[slot];
    }
  }
  if (!prioritized()) return;
  // The trees from the saved priorities: a priority must be > 0 exactly where a
  // transition is valid, and 0 elsewhere.
  for (Segment& seg : segments_) {
    for (int64_t t = 0; t < seg.size; ++t) {
      const int64_t slot = Slot(seg, t);
      const double p = priorities_[slot];
      const bool valid = ValidTransitionLocked(seg, t);
      if (!std::isfinite(p) || (valid ? !(p > 0.0) : p != 0.0)) {
        throw FormatError(where + "corrupted contents (priority of entry " + std::to_string(slot) +
                          ")");
      }
      if (valid) SetPriorityLocked(slot, p);
    }
  }
}

std::unique_ptr<ReplayMemory> ReplayMemory::Load(const std::string& path) {
  if (!HostIsLittleEndian()) {
    throw std::runtime_error("load: big-endian hosts are not supported");
  }
  Fd file;
  const uint64_t file_bytes = OpenInput(path, file);
  const std::string where = "load: " + path + ": ";
  FileReader in(file.fd, path);
  const FileHeader h = ReadHeader(in, file_bytes, where);

  std::unique_ptr<ReplayMemory> mem;
  try {
    mem.reset(new ReplayMemory(static_cast<int64_t>(h.capacity), h.frame_shape,
                               static_cast<int64_t>(h.history), static_cast<int64_t>(h.num_envs), 0,
                               h.options));
  } catch (const std::invalid_argument& e) {
    throw FormatError(where + "corrupted header (" + e.what() + ")");
  }
  mem->rng_.set_state(h.rng_state);
  mem->max_priority_ = h.max_priority;
  const uint64_t payload = mem->AdoptStreams(h.positions, h.added, where);
  if (h.payload_bytes != payload) {
    throw FormatError(where + "corrupted header (payload size)");
  }
  const uint64_t expected_bytes = h.header_bytes + payload + 16;
  if (file_bytes < expected_bytes) {
    throw FormatError(where + "file is truncated (" + std::to_string(file_bytes) +
                      " bytes, expected " + std::to_string(expected_bytes) + ")");
  }
  if (file_bytes > expected_bytes) {
    throw FormatError(where + "unexpected trailing data (" + std::to_string(file_bytes) +
                      " bytes, expected " + std::to_string(expected_bytes) + ")");
  }
  for (Segment& seg : mem->segments_) {  // the payload
    in.Read(mem->frames_ + seg.begin * mem->frame_bytes_, seg.size * mem->frame_bytes_);
    in.Read(mem->actions_.data() + seg.begin, seg.size * sizeof(int32_t));
    in.Read(mem->rewards_.data() + seg.begin, seg.size * sizeof(float));
    in.Read(mem->terminals_.data() + seg.begin, seg.size);
    if (mem->prioritized()) {
      in.Read(mem->priorities_.data() + seg.begin, seg.size * sizeof(double));
    }
  }
  const uint64_t digest = in.Digest();
  const uint64_t stored_digest = in.Get<uint64_t>();
  char end[8];
  in.Read(end, 8);
  if (digest != stored_digest || std::memcmp(end, kEndMagic, 8) != 0) {
    throw FormatError(where + "corrupted contents (checksum mismatch)");
  }
  mem->CheckLoadedEntries(where);
  return mem;
}

}  // namespace tfdqn
