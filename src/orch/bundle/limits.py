"""How big a bundle may be: the same numbers bind `orch publish` and the server."""

MAX_BUNDLE_BYTES = 50 * 1024 * 1024  # total uncompressed size of the files
MAX_FILES = 5000  # entries: files, directories and links
MAX_MANIFEST_BYTES = 1024 * 1024  # orch.yaml is a few lines; a huge one is a mistake or an attack
# What a bundle within those bounds packs to at most (the upload the server reads): its files, a
# tar header and padding for each entry (headers compress well; long paths' PAX records too), and
# gzip's few bytes per block of data that does not compress. A bundle of files just under the bound
# that do not compress packed to more than MAX_BUNDLE_BYTES, and was refused (found by a tester).
MAX_UPLOAD_BYTES = MAX_BUNDLE_BYTES + MAX_BUNDLE_BYTES // 256 + MAX_FILES * 1024
