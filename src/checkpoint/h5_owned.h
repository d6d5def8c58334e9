// An owned HDF5 identifier, closed by its kind's close function (H5Fclose, H5Gclose, ...), for the
// files that call the HDF5 C API themselves (h5.cpp, probe.cpp); h5.h keeps <hdf5.h> out of the
// rest. Close errors in a destructor cannot be reported; the ones that matter (flushing a file)
// go through H5File::close().
//
//   H5Owned g(H5Gopen2(file, "/model", H5P_DEFAULT), H5Gclose);   // g.get() < 0: the open failed
#pragma once

#include <hdf5.h>

#include <utility>

namespace tessera {

class H5Owned {
 public:
  H5Owned(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  H5Owned(H5Owned&& o) noexcept : id_(std::exchange(o.id_, -1)), close_(o.close_) {}
  H5Owned(const H5Owned&) = delete;
  H5Owned& operator=(const H5Owned&) = delete;
  H5Owned& operator=(H5Owned&&) = delete;
  ~H5Owned() {
    if (id_ >= 0) close_(id_);
  }
  hid_t get() const { return id_; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

}  // namespace tessera
