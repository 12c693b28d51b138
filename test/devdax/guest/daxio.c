// daxio: raw access to a devdax character device (which has no read/write, only mmap), for the
// test guests and as the raw-mmap baseline. Built static on the host and put in the initramfs.
//
//   daxio DEV size                     print the mappable size (from sysfs) in bytes
//   daxio DEV read OFF LEN             write LEN bytes at OFF to stdout
//   daxio DEV write OFF                copy stdin to OFF (then flush)
//   daxio DEV wait OFF STRING SECS     poll every 10 ms until STRING is at OFF; prints MATCH
//   daxio DEV bench OFF LEN ROUNDS     read LEN bytes at OFF ROUNDS times; prints MB/s
//   daxio FILE fileread BS             read() FILE to its end in BS-byte calls; prints MB/s
//                                       (the FUSE side of the FUSE-vs-mmap comparison)
//
// Every mapping is widened to the device's 2 MiB alignment, as devdax requires.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define ALIGN (2UL << 20)

static void die(const char *what) { fprintf(stderr, "daxio: %s: %s\n", what, strerror(errno)); exit(1); }

static uint64_t dev_size(int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) die("fstat");
  char path[128];
  snprintf(path, sizeof path, "/sys/dev/char/%u:%u/size", major(st.st_rdev), minor(st.st_rdev));
  FILE *f = fopen(path, "r");
  if (!f) die(path);
  unsigned long long n = 0;
  if (fscanf(f, "%llu", &n) != 1) { errno = EINVAL; die(path); }
  fclose(f);
  return n;
}

struct win { char *base; size_t len; char *p; };

static struct win map(int fd, uint64_t off, uint64_t len) {
  uint64_t start = off & ~(ALIGN - 1);
  uint64_t end = (off + len + ALIGN - 1) & ~(ALIGN - 1);
  struct win w;
  w.len = end - start;
  w.base = mmap(NULL, w.len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)start);
  if (w.base == MAP_FAILED) die("mmap");
  w.p = w.base + (off - start);
  return w;
}

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: daxio DEV size|read|write|wait|bench ...\n"); return 2; }
  if (!strcmp(argv[2], "fileread") && argc == 4) {
    int ffd = open(argv[1], O_RDONLY);
    if (ffd < 0) die(argv[1]);
    size_t bs = strtoull(argv[3], NULL, 0), total = 0;
    char *buf = malloc(bs);
    double t0 = now();
    for (ssize_t n; (n = read(ffd, buf, bs)) != 0;) {
      if (n < 0) die("read");
      total += (size_t)n;
    }
    printf("%.1f %zu\n", (double)total / (now() - t0) / 1e6, total);
    return 0;
  }
  int fd = open(argv[1], O_RDWR);
  if (fd < 0) die(argv[1]);
  const char *op = argv[2];
  if (!strcmp(op, "size")) { printf("%llu\n", (unsigned long long)dev_size(fd)); return 0; }
  if (argc < 4) return 2;
  uint64_t off = strtoull(argv[3], NULL, 0);
  if (!strcmp(op, "read") && argc == 5) {
    uint64_t len = strtoull(argv[4], NULL, 0);
    struct win w = map(fd, off, len);
    for (size_t done = 0; done < len;) {
      ssize_t n = write(1, w.p + done, len - done);
      if (n <= 0) die("stdout");
      done += (size_t)n;
    }
    return 0;
  }
  if (!strcmp(op, "write")) {
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    for (ssize_t n; (n = read(0, buf + len, cap - len)) > 0;) {
      len += (size_t)n;
      if (len == cap) buf = realloc(buf, cap *= 2);
    }
    struct win w = map(fd, off, len ? len : 1);
    memcpy(w.p, buf, len);
    // msync() on a devdax mapping fails with EINVAL (the character device has no fsync): write
    // back the cache lines by hand, as the native layer has to.
    for (size_t i = 0; i < len; i += 64) __builtin_ia32_clflush(w.p + i);
    __builtin_ia32_mfence();
    return 0;
  }
  if (!strcmp(op, "wait") && argc == 6) {
    size_t n = strlen(argv[4]);
    struct win w = map(fd, off, n);
    double deadline = now() + atof(argv[5]);
    while (now() < deadline) {
      __asm__ volatile("" ::: "memory");  // re-read the mapping every round
      if (!memcmp(w.p, argv[4], n)) { puts("MATCH"); return 0; }
      usleep(10000);
    }
    puts("TIMEOUT");
    return 1;
  }
  if (!strcmp(op, "bench") && argc == 6) {
    uint64_t len = strtoull(argv[4], NULL, 0);
    int rounds = atoi(argv[5]);
    struct win w = map(fd, off, len);
    char *dst = malloc(len);
    double t0 = now();
    for (int r = 0; r < rounds; r++) memcpy(dst, w.p, len);
    double dt = now() - t0;
    volatile char sink = dst[len - 1]; (void)sink;
    printf("%.1f\n", (double)len * rounds / dt / 1e6);
    return 0;
  }
  fprintf(stderr, "daxio: bad arguments\n");
  return 2;
}
