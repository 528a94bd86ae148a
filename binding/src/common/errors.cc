#include <cerrno>
#include <cstring>

#include "backend.h"

namespace netclamp {

std::string ErrnoName(int err) {
  switch (err) {
#define NC_ERRNO(name) \
  case name:           \
    return #name;
    NC_ERRNO(EPERM) NC_ERRNO(ENOENT) NC_ERRNO(ESRCH) NC_ERRNO(EINTR) NC_ERRNO(EIO) NC_ERRNO(E2BIG)
    NC_ERRNO(EBADF) NC_ERRNO(EAGAIN) NC_ERRNO(ENOMEM) NC_ERRNO(EACCES) NC_ERRNO(EFAULT) NC_ERRNO(EBUSY)
    NC_ERRNO(EEXIST) NC_ERRNO(ENODEV) NC_ERRNO(ENOTDIR) NC_ERRNO(EISDIR) NC_ERRNO(EINVAL) NC_ERRNO(ENFILE)
    NC_ERRNO(EMFILE) NC_ERRNO(ENOSPC) NC_ERRNO(ERANGE) NC_ERRNO(ENOSYS) NC_ERRNO(ENOTSUP)
    NC_ERRNO(ELOOP) NC_ERRNO(ENAMETOOLONG) NC_ERRNO(ENXIO) NC_ERRNO(EPROTO) NC_ERRNO(EMSGSIZE)
    NC_ERRNO(EPROTONOSUPPORT) NC_ERRNO(EAFNOSUPPORT) NC_ERRNO(ENOBUFS) NC_ERRNO(ETIMEDOUT)
#undef NC_ERRNO
    case 524:
      return "ENOTSUPP";  // kernel-internal; leaks out of some tc and BPF paths
    default:
      return "E" + std::to_string(err);
  }
}

BackendError SysError(int err, const std::string& syscall, const std::string& what) {
  return BackendError(ErrnoName(err), what + ": " + syscall + " failed: " + std::strerror(err), err, syscall);
}

}  // namespace netclamp
