/* The floor of a copy in C: how fast can a compiled copier go with napari-softcopy's
 * per-file steps, and with cp's? A measuring probe for the bulk benchmark, not a copier
 * to use (no error recovery, no resume, no live source).
 *
 *   floor STEPS SRC DST
 *
 * STEPS
 *   plain      cp -r's steps: open, create DST/name, copy_file_range, close.
 *   safe       napari-softcopy's: open (no symlink followed), fstat, look up the final name,
 *              create a temporary name beside it, copy_file_range, fstat again (the source
 *              must not have changed), set the mtime, record the source stamp
 *              (user.softcopy.source), rename into place.
 *   safe,drop  and drop both files' pages (posix_fadvise DONTNEED), as napari-softcopy does.
 *   ...,sync   and syncfs the destination at the end, as napari-softcopy does before its
 *              marker (cp -r leaves its data dirty in the page cache).
 *
 * One process, one thread, a depth-first walk by descriptor; exits 1 on the first error.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

static int safe, drop, sync_at_end;
static unsigned long counter;

static void die(const char *what, const char *name) {
    fprintf(stderr, "floor: %s %s: %s\n", what, name, strerror(errno));
    exit(1);
}

static void copy_range(int in, int out, off_t size, const char *name) {
    off_t done = 0;
    while (done < size) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)(size - done), 0);
        if (n < 0) die("copy", name);
        if (n == 0) break;
        done += n;
    }
}

static void copy_file(int sdir, int ddir, const char *name) {
    int in = openat(sdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0) die("open", name);
    struct stat before;
    if (fstat(in, &before) < 0) die("fstat", name);
    if (!safe) {
        int out = openat(ddir, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0) die("create", name);
        copy_range(in, out, before.st_size, name);
        close(out);
        close(in);
        return;
    }
    struct stat existing; /* napari-softcopy looks the final name up: created or replaced */
    (void)fstatat(ddir, name, &existing, AT_SYMLINK_NOFOLLOW);
    char temp[512];
    snprintf(temp, sizeof temp, ".%s.floor%lx.tmp", name, counter++);
    int out = openat(ddir, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (out < 0) die("create", temp);
    copy_range(in, out, before.st_size, name);
    struct stat after;
    if (fstat(in, &after) < 0) die("fstat", name);
    if (after.st_ino != before.st_ino || after.st_size != before.st_size ||
        after.st_mtim.tv_sec != before.st_mtim.tv_sec ||
        after.st_mtim.tv_nsec != before.st_mtim.tv_nsec) {
        errno = EAGAIN;
        die("source changed", name);
    }
    struct timespec times[2] = {before.st_atim, before.st_mtim};
    if (futimens(out, times) < 0) die("utime", temp);
    char stamp[64];
    int len = snprintf(stamp, sizeof stamp, "%lu:%lld%09ld", (unsigned long)before.st_ino,
                       (long long)before.st_ctim.tv_sec, before.st_ctim.tv_nsec);
    if (fsetxattr(out, "user.softcopy.source", stamp, (size_t)len, 0) < 0) die("xattr", temp);
    if (renameat(ddir, temp, ddir, name) < 0) die("rename", temp);
    if (drop) posix_fadvise(out, 0, 0, POSIX_FADV_DONTNEED);
    close(out);
    if (drop) posix_fadvise(in, 0, 0, POSIX_FADV_DONTNEED);
    close(in);
}

static void copy_tree(int sdir, int ddir) {
    int listing = dup(sdir);
    if (listing < 0) die("dup", "");
    DIR *d = fdopendir(listing);
    if (d == NULL) die("opendir", "");
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) continue;
        unsigned char type = e->d_type;
        if (type == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(sdir, name, &st, AT_SYMLINK_NOFOLLOW) < 0) die("stat", name);
            type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
        }
        if (type == DT_DIR) {
            if (mkdirat(ddir, name, 0755) < 0 && errno != EEXIST) die("mkdir", name);
            int s = openat(sdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int t = openat(ddir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (s < 0 || t < 0) die("open folder", name);
            copy_tree(s, t);
            close(s);
            close(t);
        } else if (type == DT_REG) {
            copy_file(sdir, ddir, name);
        }
    }
    closedir(d);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: floor plain|safe[,drop][,sync] SRC DST\n");
        return 2;
    }
    safe = strncmp(argv[1], "safe", 4) == 0;
    drop = strstr(argv[1], "drop") != NULL;
    sync_at_end = strstr(argv[1], "sync") != NULL;
    if (mkdir(argv[3], 0755) < 0 && errno != EEXIST) die("mkdir", argv[3]);
    int s = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int t = open(argv[3], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s < 0 || t < 0) die("open", argv[2]);
    copy_tree(s, t);
    if (sync_at_end && syncfs(t) < 0) die("syncfs", argv[3]);
    return 0;
}
