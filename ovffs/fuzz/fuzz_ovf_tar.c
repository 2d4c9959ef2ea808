/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_ovf_tar - the tar reader (and the gzip reader when the input starts
 * like gzip) on any bytes; every listed member is read back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ovf_i.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Lists the members of data as a tar and reads each one. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ovf_stream *raw, *src;
	struct ovf_tar_member *m = NULL;
	struct ovf_finding_list warn = { 0 };
	size_t n = 0;
	char buf[4096];
	FILE *f = tmpfile();

	if (!f)
		return 0;
	if (fwrite(data, 1, size, f) != size || fflush(f) ||
	    ovf_stream_fd(fileno(f), 0, size, "fuzz.ova", &raw) < 0) {
		fclose(f);
		return 0;
	}
	fclose(f);
	src = raw;
	if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
		uint64_t usize;

		if (ovf_stream_gzip(raw, "fuzz.ova", &src) < 0) {
			ovf_stream_close(raw);
			return 0;
		}
		ovf_stream_close(raw);
		if (ovf_stream_size(src, &usize) < 0 || usize > (64u << 20)) {
			ovf_stream_close(src);
			return 0;
		}
	}
	if (ovf_tar_list(src, "fuzz.ova", &m, &n, &warn) == 0) {
		for (size_t i = 0; i < n; i++) {
			struct ovf_stream *s;

			if (ovf_stream_sub(src, m[i].offset, m[i].size, m[i].name,
					   &s) == 0) {
				(void)ovf_stream_pread(s, buf, sizeof(buf), 0);
				ovf_stream_close(s);
			}
			free(m[i].name);
		}
		free(m);
	}
	ovf_findings_free(&warn);
	ovf_stream_close(src);
	return 0;
}
