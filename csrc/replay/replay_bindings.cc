// pybind11 binding of tfdqn::ReplayMemory as tfdqn_ops._replay.ReplayMemory.
//
// Arguments are checked here for dtype and shape (the core checks values);
// C++ exceptions map to Python ones: std::invalid_argument -> ValueError,
// std::out_of_range -> IndexError (pybind11's defaults), tfdqn::FormatError
// -> ValueError, tfdqn::IoError -> OSError with errno (so FileNotFoundError,
// PermissionError, ... as the errno says). The GIL is released while frames
// are copied.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "replay_memory.h"

namespace py = pybind11;

namespace tfdqn {
namespace {

std::string DtypeName(const py::array& arr) { return py::str(arr.dtype()).cast<std::string>(); }

std::vector<int64_t> ShapeVector(const py::array& arr) {
  return std::vector<int64_t>(arr.shape(), arr.shape() + arr.ndim());
}

std::string ShapeOf(const py::array& arr) { return ShapeString(ShapeVector(arr)); }

bool HasShape(const py::array& arr, const std::vector<int64_t>& shape) {
  return ShapeVector(arr) == shape;
}

// numpy.asarray(obj), without the call when obj already is an array.
py::array AsArray(py::handle obj) {
  if (py::isinstance<py::array>(obj)) {
    return py::reinterpret_borrow<py::array>(obj);
  }
  static py::object* asarray =
      new py::object(py::module_::import("numpy").attr("asarray"));  // leaked on purpose
  return py::reinterpret_steal<py::array>((*asarray)(obj).release());
}

// numpy's conversion of arr to a C-contiguous array of T (no copy when it already is one);
// byte order, strides and widths (float16 too) are numpy's business.
template <typename T>
py::array_t<T, py::array::c_style> Converted(const py::array& arr) {
  auto converted = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(arr);
  if (!converted) throw py::error_already_set();
  return converted;
}

// frames-like argument: dtype uint8 exactly (no silent casts), given shape.
py::array CheckFrames(py::handle obj, const char* name, const std::vector<int64_t>& shape) {
  py::array arr = AsArray(obj);
  const bool is_u8 = arr.dtype().kind() == 'u' && arr.dtype().itemsize() == 1;
  if (!is_u8 || !HasShape(arr, shape)) {
    throw std::invalid_argument(std::string(name) + ": expected dtype uint8 and shape " +
                                ShapeString(shape) + ", got " + DtypeName(arr) + " " +
                                ShapeOf(arr));
  }
  return Converted<uint8_t>(arr);
}

// A vector of `length` numbers of the allowed dtype kinds ('b', 'i', 'u', 'f'), read as T.
template <typename T>
std::vector<T> CheckVector(py::handle obj, const char* name, const std::string& kinds,
                           const char* what, int64_t length, const char* length_is = "num_envs") {
  py::array arr = AsArray(obj);
  const char kind = arr.dtype().kind();
  if (kinds.find(kind) == std::string::npos) {
    throw std::invalid_argument(std::string(name) + ": expected " + what + " of shape [" +
                                std::to_string(length) + "], got dtype " + DtypeName(arr));
  }
  if (!HasShape(arr, {length})) {
    throw std::invalid_argument(std::string(name) + ": expected shape [" + std::to_string(length) +
                                "] (" + length_is + "), got " + ShapeOf(arr));
  }
  if constexpr (std::is_integral_v<T>) {
    // A cast would wrap uint64 values above int64's range into valid-looking ones.
    if (kind == 'u' && arr.itemsize() == 8) {
      const auto wide = Converted<uint64_t>(arr);
      for (int64_t i = 0; i < length; ++i) {
        if (wide.data()[i] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          throw std::invalid_argument(std::string(name) + "[" + std::to_string(i) +
                                      "] = " + std::to_string(wide.data()[i]) + " is out of range");
        }
      }
    }
  }
  const auto converted = Converted<T>(arr);
  return std::vector<T>(converted.data(), converted.data() + length);
}

// The `indices` argument of update_priorities / priorities: a 1-D array of integer ids.
std::vector<int64_t> CheckIds(py::handle indices) {
  py::array arr = AsArray(indices);
  if (arr.ndim() != 1) {
    throw std::invalid_argument(
        "indices: expected a 1-D array of ids from sample_batch, got shape " + ShapeOf(arr));
  }
  return CheckVector<int64_t>(arr, "indices", "iu", "integers", arr.shape(0));
}

// An output array of sample_into: exact dtype, C-contiguous, writeable.
template <typename T>
T* CheckOut(py::array& arr, const char* name, const char* dtype_name,
            const std::vector<int64_t>& shape) {
  const bool dtype_ok = py::isinstance<py::array_t<T>>(arr);
  if (!dtype_ok || !HasShape(arr, shape)) {
    throw std::invalid_argument(std::string(name) + ": expected dtype " + dtype_name +
                                " and shape " + ShapeString(shape) + ", got " + DtypeName(arr) +
                                " " + ShapeOf(arr));
  }
  if (!(arr.flags() & py::array::c_style)) {
    throw std::invalid_argument(std::string(name) + ": expected a C-contiguous array");
  }
  if (!arr.writeable()) {
    throw std::invalid_argument(std::string(name) + ": expected a writeable array");
  }
  return static_cast<T*>(arr.mutable_data());
}

std::vector<int64_t> Concat(std::vector<int64_t> head, const std::vector<int64_t>& tail) {
  head.insert(head.end(), tail.begin(), tail.end());
  return head;
}

std::string FsPath(py::handle path) {
  py::object p = py::module_::import("os").attr("fspath")(path);
  if (!py::isinstance<py::str>(p)) {
    throw py::type_error("path: expected str or os.PathLike of str");
  }
  return p.cast<std::string>();
}

std::vector<int64_t> ParseShape(py::handle frame_shape) {
  std::vector<int64_t> shape;
  if (py::isinstance<py::int_>(frame_shape)) {
    shape.push_back(frame_shape.cast<int64_t>());
    return shape;
  }
  if (!py::isinstance<py::sequence>(frame_shape) || py::isinstance<py::str>(frame_shape)) {
    throw std::invalid_argument("frame_shape: expected a tuple of positive integers, got " +
                                py::repr(frame_shape).cast<std::string>());
  }
  for (py::handle d : frame_shape) {
    if (!py::isinstance<py::int_>(d) && !py::hasattr(d, "__index__")) {
      throw std::invalid_argument("frame_shape: expected a tuple of positive integers, got " +
                                  py::repr(frame_shape).cast<std::string>());
    }
    shape.push_back(py::int_(py::reinterpret_borrow<py::object>(d)).cast<int64_t>());
  }
  return shape;
}

uint64_t ParseSeed(py::handle seed) {
  if (!py::isinstance<py::int_>(seed) || py::isinstance<py::bool_>(seed)) {
    throw std::invalid_argument("seed: expected an integer in [0, 2**64), got " +
                                py::repr(seed).cast<std::string>());
  }
  py::int_ value = py::reinterpret_borrow<py::int_>(seed);
  const bool ok = value >= py::int_(0) && value < py::int_(1).attr("__lshift__")(64);
  if (!ok) {
    throw std::invalid_argument("seed: expected an integer in [0, 2**64), got " +
                                py::repr(seed).cast<std::string>());
  }
  return value.cast<uint64_t>();
}

py::tuple ShapeTuple(const std::vector<int64_t>& shape) {
  py::tuple t(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) t[i] = py::int_(shape[i]);
  return t;
}

// IoError -> OSError (with errno, so FileNotFoundError and the like), FormatError ->
// ValueError.
void BindErrors() {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const tfdqn::IoError& e) {
      py::object err = py::reinterpret_borrow<py::object>(PyExc_OSError)(
          e.errno_value(), std::string(e.what()), e.path());
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(err.ptr())), err.ptr());
    } catch (const tfdqn::FormatError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
}

// What sample_batch returns: a namedtuple, so that it unpacks and pickles as plain data.
void BindReplayBatch(py::module_& m) {
  m.attr("ReplayBatch") =
      py::module_::import("collections")
          .attr("namedtuple")("ReplayBatch", py::make_tuple("s", "a", "r", "s2", "term", "discount",
                                                            "index", "weight"));
  m.attr("ReplayBatch").attr("__module__") = "tfdqn_ops.replay";
}

void BindReplayMemory(py::module_& m) {
  py::class_<ReplayMemory>(m, "ReplayMemory")
      .def(py::init([](int64_t capacity, py::handle frame_shape, int64_t history, int64_t num_envs,
                       py::handle seed, int64_t n_step, double discount, double priority_exponent) {
             tfdqn::ReplayOptions options;
             options.n_step = n_step;
             options.discount = discount;
             options.priority_exponent = priority_exponent;
             return std::make_unique<ReplayMemory>(capacity, tfdqn::ParseShape(frame_shape),
                                                   history, num_envs, tfdqn::ParseSeed(seed),
                                                   options);
           }),
           py::arg("capacity"), py::arg("frame_shape") = py::make_tuple(84, 84),
           py::arg("history") = 4, py::arg("num_envs") = 1, py::arg("seed") = 0, py::kw_only(),
           py::arg("n_step") = 1, py::arg("discount") = 0.99, py::arg("priority_exponent") = 0.0)
      .def(
          "add",
          [](ReplayMemory& self, py::handle frames, py::handle actions, py::handle rewards,
             py::handle terminals) {
            const int64_t n = self.num_envs();
            py::array f =
                tfdqn::CheckFrames(frames, "frames", tfdqn::Concat({n}, self.frame_shape()));
            const auto a = tfdqn::CheckVector<int64_t>(actions, "actions", "iu", "integers", n);
            const auto r =
                tfdqn::CheckVector<double>(rewards, "rewards", "fiub", "real numbers", n);
            const auto t =
                tfdqn::CheckVector<double>(terminals, "terminals", "biuf", "booleans (or 0/1)", n);
            const uint8_t* data = static_cast<const uint8_t*>(f.data());
            if (n * self.frame_bytes() < (int64_t{1} << 16)) {
              // Releasing the GIL costs more than copying a few frames.
              self.Add(data, a.data(), r.data(), t.data());
            } else {
              py::gil_scoped_release release;
              self.Add(data, a.data(), r.data(), t.data());
            }
          },
          py::arg("frames"), py::arg("actions"), py::arg("rewards"), py::arg("terminals"))
      .def(
          "add_stream",
          [](ReplayMemory& self, int64_t env_index, py::handle frames, py::handle actions,
             py::handle rewards, py::handle terminals) {
            if (env_index < 0 || env_index >= self.num_envs()) {
              throw std::out_of_range("env_index: " + std::to_string(env_index) +
                                      " is not in [0, " + std::to_string(self.num_envs()) + ")");
            }
            py::array arr = tfdqn::AsArray(frames);
            const int64_t n = arr.ndim() >= 1 ? arr.shape(0) : -1;
            py::array f = tfdqn::CheckFrames(
                arr, "frames", tfdqn::Concat({std::max<int64_t>(n, 0)}, self.frame_shape()));
            const char* length_is = "the number of frames";
            const auto a =
                tfdqn::CheckVector<int64_t>(actions, "actions", "iu", "integers", n, length_is);
            const auto r = tfdqn::CheckVector<double>(rewards, "rewards", "fiub", "real numbers", n,
                                                      length_is);
            const auto t = tfdqn::CheckVector<double>(terminals, "terminals", "biuf",
                                                      "booleans (or 0/1)", n, length_is);
            const uint8_t* data = static_cast<const uint8_t*>(f.data());
            py::gil_scoped_release release;
            self.AddStream(env_index, n, data, a.data(), r.data(), t.data());
          },
          py::arg("env_index"), py::arg("frames"), py::arg("actions"), py::arg("rewards"),
          py::arg("terminals"))
      .def("stream_added", &ReplayMemory::stream_added, py::arg("env_index"))
      .def(
          "sample",
          [](ReplayMemory& self, int64_t batch_size) {
            self.CheckSampleable(batch_size);  // before allocating the batch
            const auto state_shape =
                tfdqn::Concat({batch_size, self.history()}, self.frame_shape());
            py::array_t<uint8_t> s(state_shape), s2(state_shape);
            py::array_t<int32_t> a(batch_size);
            py::array_t<float> r(batch_size), term(batch_size);
            {
              py::gil_scoped_release release;
              self.SampleInto(batch_size, s.mutable_data(), a.mutable_data(), r.mutable_data(),
                              s2.mutable_data(), term.mutable_data());
            }
            return py::make_tuple(s, a, r, s2, term);
          },
          py::arg("batch_size"))
      .def(
          "sample_batch",
          [](ReplayMemory& self, int64_t batch_size, double importance_exponent) {
            self.CheckSampleable(batch_size);  // before allocating the batch
            const auto state_shape =
                tfdqn::Concat({batch_size, self.history()}, self.frame_shape());
            py::array_t<uint8_t> s(state_shape), s2(state_shape);
            py::array_t<int32_t> a(batch_size);
            py::array_t<float> r(batch_size), term(batch_size), discount(batch_size),
                weight(batch_size);
            py::array_t<int64_t> index(batch_size);
            const tfdqn::BatchColumns out{a.mutable_data(),     r.mutable_data(),
                                          term.mutable_data(),  discount.mutable_data(),
                                          index.mutable_data(), weight.mutable_data()};
            {
              py::gil_scoped_release release;
              self.SampleBatchInto(batch_size, importance_exponent, s.mutable_data(),
                                   s2.mutable_data(), out);
            }
            static py::object* batch_type = new py::object(
                py::module_::import("tfdqn_ops._replay").attr("ReplayBatch"));  // leaked on purpose
            return (*batch_type)(s, a, r, s2, term, discount, index, weight);
          },
          py::arg("batch_size"), py::arg("importance_exponent") = 1.0)
      .def(
          "update_priorities",
          [](ReplayMemory& self, py::handle indices, py::handle priorities) {
            const auto ids = tfdqn::CheckIds(indices);
            const int64_t n = static_cast<int64_t>(ids.size());
            const auto values = tfdqn::CheckVector<double>(priorities, "priorities", "fiu",
                                                           "real numbers", n, "that of indices");
            py::gil_scoped_release release;
            return self.UpdatePriorities(ids.data(), values.data(), n);
          },
          py::arg("indices"), py::arg("priorities"))
      .def(
          "priorities",
          [](const ReplayMemory& self, py::handle indices) {
            const auto ids = tfdqn::CheckIds(indices);
            const int64_t n = static_cast<int64_t>(ids.size());
            py::array_t<double> out(n);
            self.PrioritiesOf(ids.data(), n, out.mutable_data());
            return out;
          },
          py::arg("indices"))
      .def(
          "sample_into",
          [](ReplayMemory& self, py::array s, py::array a, py::array r, py::array s2,
             py::array term) {
            if (s.ndim() < 1) {
              throw std::invalid_argument("s: expected dtype uint8 and shape [batch, " +
                                          std::to_string(self.history()) + ", ...], got " +
                                          tfdqn::DtypeName(s) + " " + tfdqn::ShapeOf(s));
            }
            const int64_t batch = s.shape(0);
            if (batch <= 0) {
              throw std::invalid_argument(
                  "s: batch_size (its first dimension) must be positive, got " +
                  std::to_string(batch));
            }
            const auto state_shape = tfdqn::Concat({batch, self.history()}, self.frame_shape());
            auto* ps = tfdqn::CheckOut<uint8_t>(s, "s", "uint8", state_shape);
            auto* ps2 = tfdqn::CheckOut<uint8_t>(s2, "s2", "uint8", state_shape);
            auto* pa = tfdqn::CheckOut<int32_t>(a, "a", "int32", {batch});
            auto* pr = tfdqn::CheckOut<float>(r, "r", "float32", {batch});
            auto* pt = tfdqn::CheckOut<float>(term, "term", "float32", {batch});
            py::gil_scoped_release release;
            self.SampleInto(batch, ps, pa, pr, ps2, pt);
          },
          py::arg("s"), py::arg("a"), py::arg("r"), py::arg("s2"), py::arg("term"))
      .def(
          "sample_windows",
          [](ReplayMemory& self, int64_t batch_size) {
            self.CheckSampleable(batch_size);  // before allocating the batch
            py::array_t<uint8_t> w(
                tfdqn::Concat({batch_size, self.history() + 1}, self.frame_shape()));
            py::array_t<int32_t> a(batch_size);
            py::array_t<float> r(batch_size), term(batch_size);
            {
              py::gil_scoped_release release;
              self.SampleWindowsInto(batch_size, w.mutable_data(), a.mutable_data(),
                                     r.mutable_data(), term.mutable_data());
            }
            return py::make_tuple(w, a, r, term);
          },
          py::arg("batch_size"))
      .def(
          "sample_windows_into",
          [](ReplayMemory& self, py::array windows, py::array a, py::array r, py::array term) {
            if (windows.ndim() < 1 || windows.shape(0) <= 0) {
              throw std::invalid_argument("windows: expected dtype uint8 and shape [batch > 0, " +
                                          std::to_string(self.history() + 1) + ", ...], got " +
                                          tfdqn::DtypeName(windows) + " " +
                                          tfdqn::ShapeOf(windows));
            }
            const int64_t batch = windows.shape(0);
            auto* pw = tfdqn::CheckOut<uint8_t>(
                windows, "windows", "uint8",
                tfdqn::Concat({batch, self.history() + 1}, self.frame_shape()));
            auto* pa = tfdqn::CheckOut<int32_t>(a, "a", "int32", {batch});
            auto* pr = tfdqn::CheckOut<float>(r, "r", "float32", {batch});
            auto* pt = tfdqn::CheckOut<float>(term, "term", "float32", {batch});
            py::gil_scoped_release release;
            self.SampleWindowsInto(batch, pw, pa, pr, pt);
          },
          py::arg("windows"), py::arg("a"), py::arg("r"), py::arg("term"))
      .def(
          "acting_state",
          [](ReplayMemory& self, int64_t env_index, py::object frame) {
            if (env_index < 0 || env_index >= self.num_envs()) {
              throw std::out_of_range("env_index: " + std::to_string(env_index) +
                                      " is not in [0, " + std::to_string(self.num_envs()) + ")");
            }
            py::array_t<uint8_t> out(tfdqn::Concat({self.history()}, self.frame_shape()));
            py::array f;
            const uint8_t* next = nullptr;
            if (!frame.is_none()) {
              f = tfdqn::CheckFrames(frame, "frame", self.frame_shape());
              next = static_cast<const uint8_t*>(f.data());
            }
            py::gil_scoped_release release;
            self.ActingState(env_index, next, out.mutable_data());
            return out;
          },
          py::arg("env_index"), py::arg("frame") = py::none())
      .def(
          "acting_states",
          [](ReplayMemory& self, py::object frames, py::object out) {
            const int64_t n = self.num_envs();
            const auto frame_bytes = self.frame_bytes();
            const auto out_shape = tfdqn::Concat({n, self.history()}, self.frame_shape());
            py::array result;
            uint8_t* dst;
            if (out.is_none()) {
              py::array_t<uint8_t> fresh(out_shape);
              dst = fresh.mutable_data();
              result = fresh;
            } else {
              result = tfdqn::AsArray(out);
              if (!result.is(out)) {
                throw std::invalid_argument("out: expected a numpy array");
              }
              dst = tfdqn::CheckOut<uint8_t>(result, "out", "uint8", out_shape);
            }
            py::array f;
            const uint8_t* next = nullptr;
            if (!frames.is_none()) {
              f = tfdqn::CheckFrames(frames, "frames", tfdqn::Concat({n}, self.frame_shape()));
              next = static_cast<const uint8_t*>(f.data());
            }
            {
              py::gil_scoped_release release;
              for (int64_t e = 0; e < n; ++e) {
                self.ActingState(e, next ? next + e * frame_bytes : nullptr,
                                 dst + e * self.history() * frame_bytes);
              }
            }
            return result;
          },
          py::arg("frames") = py::none(), py::arg("out") = py::none())
      .def("__len__", &ReplayMemory::size)
      .def("stream_size", &ReplayMemory::stream_size, py::arg("env_index"))
      .def_property_readonly("capacity", &ReplayMemory::capacity)
      .def_property_readonly("history", &ReplayMemory::history)
      .def_property_readonly("num_envs", &ReplayMemory::num_envs)
      .def_property_readonly(
          "frame_shape",
          [](const ReplayMemory& self) { return tfdqn::ShapeTuple(self.frame_shape()); })
      .def_property_readonly("num_valid_windows", &ReplayMemory::num_valid_windows)
      .def_property_readonly("n_step",
                             [](const ReplayMemory& self) { return self.options().n_step; })
      .def_property_readonly("discount",
                             [](const ReplayMemory& self) { return self.options().discount; })
      .def_property_readonly(
          "priority_exponent",
          [](const ReplayMemory& self) { return self.options().priority_exponent; })
      .def_property_readonly("max_priority", &ReplayMemory::max_priority)
      .def_property_readonly("priority_total", &ReplayMemory::priority_total)
      .def_property_readonly("priority_min", &ReplayMemory::priority_min)
      .def_property_readonly("rng_state",
                             [](const ReplayMemory& self) {
                               auto st = self.rng_state();
                               return py::make_tuple(st[0], st[1], st[2], st[3]);
                             })
      .def(
          "save",
          [](const ReplayMemory& self, py::handle path) {
            const std::string p = tfdqn::FsPath(path);
            py::gil_scoped_release release;
            self.Save(p);
          },
          py::arg("path"))
      .def_static(
          "load",
          [](py::handle path) {
            const std::string p = tfdqn::FsPath(path);
            std::unique_ptr<ReplayMemory> mem;
            {
              py::gil_scoped_release release;
              mem = ReplayMemory::Load(p);
            }
            return mem;
          },
          py::arg("path"))
      .def("__repr__", [](const ReplayMemory& self) {
        return "ReplayMemory(capacity=" + std::to_string(self.capacity()) + ", frame_shape=" +
               py::repr(tfdqn::ShapeTuple(self.frame_shape())).cast<std::string>() +
               ", history=" + std::to_string(self.history()) +
               ", num_envs=" + std::to_string(self.num_envs()) +
               (self.options().n_step != 1 ? ", n_step=" + std::to_string(self.options().n_step)
                                           : std::string()) +
               (self.prioritized()
                    ? ", priority_exponent=" +
                          py::repr(py::float_(self.options().priority_exponent)).cast<std::string>()
                    : std::string()) +
               ") with " + std::to_string(self.size()) + " entries";
      });
}

void BindChecksum(py::module_& m) {
  m.def(
      "_xxh64",
      [](py::bytes data, uint64_t seed) {
        std::string_view v = data;
        return tfdqn::HashXxh64(v.data(), v.size(), seed);
      },
      py::arg("data"), py::arg("seed") = 0,
      "XXH64 of bytes (the save file checksum); exposed for tests.");
}

}  // namespace
}  // namespace tfdqn

PYBIND11_MODULE(_replay, m) {
  m.doc() =
      "DQN 3.0 replay memory (one frame per transition) in C++; see "
      "tfdqn_ops.replay for the documentation.";
  tfdqn::BindErrors();
  tfdqn::BindReplayBatch(m);
  tfdqn::BindReplayMemory(m);
  tfdqn::BindChecksum(m);
}
