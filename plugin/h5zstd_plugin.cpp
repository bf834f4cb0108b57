// The zstd filter (HDF5 filter id 32015) as an HDF5 dynamic plugin: with HDF5_PLUGIN_PATH naming the folder
// that holds this library (build/hdf5-plugins/ by default), h5py, h5dump and any HDF5 program read the
// compressed datasets megatron2hf writes, and datasets written by hdf5plugin's Zstd filter too. The filter
// code is the engine's own (engine/io/zstd_filter.cpp). The library links libzstd but not libhdf5, so every
// HDF5 build (serial or parallel, h5py's or the system's) can load it.
#include <H5PLextern.h>

#include "io/zstd_filter.hpp"

extern "C" H5PL_type_t H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }

extern "C" const void* H5PLget_plugin_info(void) { return m2h::io::zstd_filter_class(); }
