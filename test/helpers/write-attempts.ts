/**
 * The start of a Python script that tries to change a file and records how each try ended:
 * `attempt(name, fn)` stores "OK" or the errno name in `out`; `write()` opens `f` write-only and
 * writes five bytes at offset 0. The script that appends to it sets `f` first, then prints
 * `json.dumps(out)`. Python, because the tries run in a shell inside another mount namespace.
 */
export const PY_WRITE_ATTEMPTS = String.raw`
import errno, json, mmap, os, sys
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = 'OK'
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
def write():
    fd = os.open(f, os.O_WRONLY)
    try: os.pwrite(fd, b'PWNED', 0)
    finally: os.close(fd)
`;
