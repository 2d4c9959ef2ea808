/* SPDX-License-Identifier: Apache-2.0 */
/* render.c - the package as JSON and as text for people: `ovf info` and
 * the files ovffs shows (hardware.json, product.json, summary.txt,
 * verify.txt). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ovf_i.h"
#include "units.h"

/* Appends ,"key": to a JSON object being built (first: no comma). */
static void jkey(struct ovf_buf *b, bool *first, const char *key)
{
	if (!*first)
		ovf_buf_add(b, ",", 1);
	*first = false;
	ovf_buf_json_str(b, key);
	ovf_buf_add(b, ":", 1);
}

static void jstr(struct ovf_buf *b, bool *first, const char *key, const char *v)
{
	jkey(b, first, key);
	ovf_buf_json_str(b, v);
}

static void jnum(struct ovf_buf *b, bool *first, const char *key, uint64_t v)
{
	jkey(b, first, key);
	ovf_buf_printf(b, "%" PRIu64, v);
}

static void jbool(struct ovf_buf *b, bool *first, const char *key, bool v)
{
	jkey(b, first, key);
	ovf_buf_add(b, v ? "true" : "false", v ? 4 : 5);
}

/* The hardware items of s as a JSON object. */
static void hardware_json(struct ovf_buf *b, const struct ovf_envelope *env,
			  const struct ovf_system *s)
{
	bool f = true;

	ovf_buf_add(b, "{", 1);
	jstr(b, &f, "id", s->id);
	jstr(b, &f, "name", s->name);
	jstr(b, &f, "virtual_system_type", s->hw_system_type);
	jnum(b, &f, "cpus", s->cpus);
	jnum(b, &f, "memory_bytes", s->memory_bytes);
	jkey(b, &f, "items");
	ovf_buf_add(b, "[", 1);
	for (size_t i = 0; i < s->nitems; i++) {
		const struct ovf_item *it = &s->items[i];
		bool g = true;

		if (i)
			ovf_buf_add(b, ",", 1);
		ovf_buf_add(b, "{", 1);
		jstr(b, &g, "kind", it->kind);
		if (it->has_resource_type)
			jnum(b, &g, "resource_type", it->resource_type);
		jstr(b, &g, "instance_id", it->instance_id);
		jstr(b, &g, "element_name", it->element_name);
		if (it->resource_subtype)
			jstr(b, &g, "subtype", it->resource_subtype);
		if (it->parent)
			jstr(b, &g, "parent", it->parent);
		if (it->address)
			jstr(b, &g, "address", it->address);
		if (it->address_on_parent)
			jstr(b, &g, "address_on_parent", it->address_on_parent);
		if (it->connection)
			jstr(b, &g, "connection", it->connection);
		if (it->host_resource) {
			const char *hr = it->host_resource;
			const char *slash = strrchr(hr, '/');
			const struct ovf_disk *d = slash ? ovf_find_disk(env, slash + 1) : NULL;

			jstr(b, &g, "host_resource", hr);
			if (d && d->has_capacity)
				jnum(b, &g, "disk_capacity_bytes", d->capacity);
		}
		if (it->has_quantity)
			jnum(b, &g, "virtual_quantity", it->virtual_quantity);
		if (it->allocation_units)
			jstr(b, &g, "allocation_units", it->allocation_units);
		if (it->has_bytes)
			jnum(b, &g, "bytes", it->bytes);
		if (it->config_name)
			jstr(b, &g, "configuration", it->config_name);
		if (!it->required)
			jbool(b, &g, "required", false);
		ovf_buf_add(b, "}", 1);
	}
	ovf_buf_add(b, "]}", 2);
}

/* ProductSections of s as a JSON array. */
static void products_json(struct ovf_buf *b, const struct ovf_system *s)
{
	ovf_buf_add(b, "[", 1);
	for (size_t i = 0; i < s->nproducts; i++) {
		const struct ovf_product *p = &s->products[i];
		bool f = true;

		if (i)
			ovf_buf_add(b, ",", 1);
		ovf_buf_add(b, "{", 1);
		jstr(b, &f, "class", p->class_id);
		jstr(b, &f, "instance", p->instance_id);
		jstr(b, &f, "product", p->product);
		jstr(b, &f, "vendor", p->vendor);
		jstr(b, &f, "version", p->version);
		jstr(b, &f, "full_version", p->full_version);
		jstr(b, &f, "product_url", p->product_url);
		jstr(b, &f, "vendor_url", p->vendor_url);
		jkey(b, &f, "properties");
		ovf_buf_add(b, "[", 1);
		for (size_t j = 0; j < p->nprops; j++) {
			const struct ovf_property *pr = &p->props[j];
			bool g = true;

			if (j)
				ovf_buf_add(b, ",", 1);
			ovf_buf_add(b, "{", 1);
			jstr(b, &g, "key", pr->key);
			jstr(b, &g, "type", pr->type);
			jstr(b, &g, "value", pr->value);
			jstr(b, &g, "label", pr->label);
			jstr(b, &g, "description", pr->description);
			jbool(b, &g, "user_configurable", pr->user_configurable);
			ovf_buf_add(b, "}", 1);
		}
		ovf_buf_add(b, "]}", 2);
	}
	ovf_buf_add(b, "]", 1);
}

/* A system (recursively) as JSON for `ovf info --output=json`. */
static void system_json(struct ovf_buf *b, const struct ovf_envelope *env,
			const struct ovf_system *s)
{
	bool f = true;

	ovf_buf_add(b, "{", 1);
	jstr(b, &f, "type", s->collection ? "VirtualSystemCollection" : "VirtualSystem");
	jstr(b, &f, "id", s->id);
	jstr(b, &f, "name", s->name);
	jstr(b, &f, "info", s->info);
	if (!s->collection) {
		jkey(b, &f, "hardware");
		hardware_json(b, env, s);
	}
	jkey(b, &f, "products");
	products_json(b, s);
	jbool(b, &f, "eula", s->neulas > 0);
	if (s->has_os) {
		jnum(b, &f, "os_id", s->os_id);
		jstr(b, &f, "os_description", s->os_description);
	}
	jstr(b, &f, "annotation", s->annotation);
	jkey(b, &f, "other_sections");
	ovf_buf_add(b, "[", 1);
	for (size_t i = 0; i < s->nothers; i++) {
		bool g = true;

		if (i)
			ovf_buf_add(b, ",", 1);
		ovf_buf_add(b, "{", 1);
		jstr(b, &g, "name", s->others[i].name);
		jstr(b, &g, "namespace", s->others[i].ns);
		jbool(b, &g, "required", s->others[i].required);
		ovf_buf_add(b, "}", 1);
	}
	ovf_buf_add(b, "]", 1);
	if (s->collection) {
		jkey(b, &f, "systems");
		ovf_buf_add(b, "[", 1);
		for (size_t i = 0; i < s->nchildren; i++) {
			if (i)
				ovf_buf_add(b, ",", 1);
			system_json(b, env, &s->children[i]);
		}
		ovf_buf_add(b, "]", 1);
	}
	ovf_buf_add(b, "}", 1);
}

static const char *const digest_status_name[] = {
	[OVF_DIGEST_OK] = "ok", [OVF_DIGEST_MISMATCH] = "mismatch",
	[OVF_DIGEST_MISSING] = "missing", [OVF_DIGEST_UNLISTED] = "unlisted",
	[OVF_DIGEST_UNREADABLE] = "unreadable",
};

static const char *const sig_name[] = {
	[OVF_SIG_NONE] = "none", [OVF_SIG_OK] = "verified",
	[OVF_SIG_BAD] = "bad", [OVF_SIG_ERROR] = "error",
};

/* The whole package as JSON. */
char *ovf_info_json(struct ovf_pkg *p, const struct ovf_verify *v)
{
	const struct ovf_envelope *env = p->env;
	struct ovf_buf b = { 0 };
	bool f = true;

	ovf_buf_add(&b, "{", 1);
	jstr(&b, &f, "package", p->path);
	jstr(&b, &f, "kind", p->ova ? (p->gzipped ? "ova+gzip" : "ova") : "folder");
	jstr(&b, &f, "ovf_version", env->version);
	jstr(&b, &f, "descriptor", p->descriptor);
	jkey(&b, &f, "files");
	ovf_buf_add(&b, "[", 1);
	for (size_t i = 0; i < env->nfiles; i++) {
		const struct ovf_file *fl = &env->files[i];
		bool g = true;

		if (i)
			ovf_buf_add(&b, ",", 1);
		ovf_buf_add(&b, "{", 1);
		jstr(&b, &g, "id", fl->id);
		jstr(&b, &g, "href", fl->href);
		if (fl->has_size)
			jnum(&b, &g, "size", fl->size);
		jstr(&b, &g, "compression", fl->compression);
		if (fl->chunk_size)
			jnum(&b, &g, "chunk_size", fl->chunk_size);
		ovf_buf_add(&b, "}", 1);
	}
	ovf_buf_add(&b, "]", 1);
	jkey(&b, &f, "disks");
	ovf_buf_add(&b, "[", 1);
	for (size_t i = 0; i < env->ndisks; i++) {
		const struct ovf_disk *d = &env->disks[i];
		bool g = true;

		if (i)
			ovf_buf_add(&b, ",", 1);
		ovf_buf_add(&b, "{", 1);
		jstr(&b, &g, "disk_id", d->disk_id);
		jstr(&b, &g, "file_ref", d->file_ref);
		jstr(&b, &g, "format", d->format);
		jstr(&b, &g, "capacity", d->capacity_text);
		jstr(&b, &g, "capacity_units", d->capacity_units);
		if (d->has_capacity)
			jnum(&b, &g, "capacity_bytes", d->capacity);
		if (d->has_populated_size)
			jnum(&b, &g, "populated_size", d->populated_size);
		jstr(&b, &g, "parent_ref", d->parent_ref);
		ovf_buf_add(&b, "}", 1);
	}
	ovf_buf_add(&b, "]", 1);
	jkey(&b, &f, "networks");
	ovf_buf_add(&b, "[", 1);
	for (size_t i = 0; i < env->nnetworks; i++) {
		bool g = true;

		if (i)
			ovf_buf_add(&b, ",", 1);
		ovf_buf_add(&b, "{", 1);
		jstr(&b, &g, "name", env->networks[i].name);
		jstr(&b, &g, "description", env->networks[i].description);
		ovf_buf_add(&b, "}", 1);
	}
	ovf_buf_add(&b, "]", 1);
	jkey(&b, &f, "content");
	if (env->content)
		system_json(&b, env, env->content);
	else
		ovf_buf_add(&b, "null", 4);
	jstr(&b, &f, "manifest", p->manifest);
	jstr(&b, &f, "certificate", p->cert);
	if (v) {
		jkey(&b, &f, "verify");
		ovf_buf_add(&b, "{", 1);
		bool g = true;

		jbool(&b, &g, "has_manifest", v->has_manifest);
		jbool(&b, &g, "digests_ok", v->digests_ok);
		jkey(&b, &g, "digests");
		ovf_buf_add(&b, "[", 1);
		for (size_t i = 0; i < v->nentries; i++) {
			bool h = true;

			if (i)
				ovf_buf_add(&b, ",", 1);
			ovf_buf_add(&b, "{", 1);
			jstr(&b, &h, "name", v->entries[i].name);
			jstr(&b, &h, "algorithm", v->entries[i].algo);
			jstr(&b, &h, "status", digest_status_name[v->entries[i].status]);
			ovf_buf_add(&b, "}", 1);
		}
		ovf_buf_add(&b, "]", 1);
		jstr(&b, &g, "signature", sig_name[v->sig]);
		jstr(&b, &g, "signature_message", v->sig_message);
		jstr(&b, &g, "cert_subject", v->cert_subject);
		jstr(&b, &g, "cert_issuer", v->cert_issuer);
		jstr(&b, &g, "cert_not_before", v->cert_not_before);
		jstr(&b, &g, "cert_not_after", v->cert_not_after);
		jbool(&b, &g, "cert_time_valid", v->cert_time_valid);
		jbool(&b, &g, "cert_self_signed", v->cert_self_signed);
		ovf_buf_add(&b, "}", 1);
	}
	ovf_buf_add(&b, "}\n", 2);
	return ovf_buf_take(&b);
}

/* One system's summary lines, indented by depth. */
static void system_text(struct ovf_buf *b, const struct ovf_envelope *env,
			const struct ovf_system *s, int depth)
{
	char sz[32];
	int ind = depth * 2;

	ovf_buf_printf(b, "%*s%s %s%s%s%s\n", ind, "",
		       s->collection ? "VirtualSystemCollection" : "VirtualSystem",
		       s->id ? s->id : "?", s->name ? " (" : "",
		       s->name ? s->name : "", s->name ? ")" : "");
	if (!s->collection) {
		human_size_1dp(s->memory_bytes, sz, sizeof(sz));
		ovf_buf_printf(b, "%*s  cpus: %u, memory: %s\n", ind, "", s->cpus, sz);
		for (size_t i = 0; i < s->nitems; i++) {
			const struct ovf_item *it = &s->items[i];

			if (it->resource_type == OVF_RT_CPU ||
			    it->resource_type == OVF_RT_MEMORY)
				continue;
			ovf_buf_printf(b, "%*s  %-8s %s", ind, "", it->kind,
				       it->element_name ? it->element_name : "");
			if (it->resource_subtype)
				ovf_buf_printf(b, " [%s]", it->resource_subtype);
			if (it->parent)
				ovf_buf_printf(b, " on %s:%s", it->parent,
					       it->address_on_parent ? it->address_on_parent : "?");
			if (it->host_resource)
				ovf_buf_printf(b, " -> %s", it->host_resource);
			if (it->connection)
				ovf_buf_printf(b, " network %s", it->connection);
			ovf_buf_add(b, "\n", 1);
		}
	}
	if (s->has_os)
		ovf_buf_printf(b, "%*s  os: %u %s\n", ind, "", s->os_id,
			       s->os_description ? s->os_description : "");
	for (size_t i = 0; i < s->nproducts; i++) {
		const struct ovf_product *p = &s->products[i];

		ovf_buf_printf(b, "%*s  product: %s %s (%s)\n", ind, "",
			       p->product ? p->product : "-",
			       p->version ? p->version : "",
			       p->vendor ? p->vendor : "");
		for (size_t j = 0; j < p->nprops; j++)
			ovf_buf_printf(b, "%*s    property %s%s%s = %s\n", ind, "",
				       p->class_id ? p->class_id : "",
				       p->class_id ? "." : "", p->props[j].key,
				       p->props[j].value ? p->props[j].value : "");
	}
	ovf_buf_printf(b, "%*s  eula: %s\n", ind, "", s->neulas ? "yes" : "no");
	for (size_t i = 0; i < s->nothers; i++)
		ovf_buf_printf(b, "%*s  section %s (%s)\n", ind, "",
			       s->others[i].name,
			       s->others[i].required ? "required" : "optional");
	for (size_t i = 0; i < s->nchildren; i++)
		system_text(b, env, &s->children[i], depth + 1);
}

/* Verification results for people (also ovffs's verify.txt). */
static void verify_text(struct ovf_buf *b, const struct ovf_verify *v)
{
	if (!v->has_manifest)
		ovf_buf_printf(b, "manifest: none\n");
	else
		ovf_buf_printf(b, "manifest: %s\n", v->digests_ok ? "all digests match" : "PROBLEMS");
	for (size_t i = 0; i < v->nentries; i++) {
		const struct ovf_digest_entry *e = &v->entries[i];

		ovf_buf_printf(b, "  %-10s %s %s\n", digest_status_name[e->status],
			       e->algo ? e->algo : "-", e->name);
	}
	ovf_buf_printf(b, "signature: %s%s%s\n", sig_name[v->sig],
		       v->sig_message ? ": " : "",
		       v->sig_message ? v->sig_message : "");
	if (v->cert_subject) {
		ovf_buf_printf(b, "certificate subject: %s\n", v->cert_subject);
		ovf_buf_printf(b, "certificate issuer: %s%s\n", v->cert_issuer,
			       v->cert_self_signed ? " (self-signed)" : "");
		ovf_buf_printf(b, "certificate validity: %s .. %s (%s now)\n",
			       v->cert_not_before, v->cert_not_after,
			       v->cert_time_valid ? "valid" : "NOT valid");
		ovf_buf_printf(b, "trust: not decided here; check the subject and issuer yourself\n");
	}
}

/* verify.txt contents. */
char *ovf_verify_text(const struct ovf_verify *v)
{
	struct ovf_buf b = { 0 };

	verify_text(&b, v);
	return ovf_buf_take(&b);
}

/* `ovf info` for people. */
char *ovf_info_text(struct ovf_pkg *p, const struct ovf_verify *v)
{
	const struct ovf_envelope *env = p->env;
	struct ovf_buf b = { 0 };
	char sz[32];

	ovf_buf_printf(&b, "package: %s (%s)\n", p->path,
		       p->ova ? (p->gzipped ? "gzip'd OVA" : "OVA") : "folder");
	ovf_buf_printf(&b, "descriptor: %s, OVF %s\n", p->descriptor, env->version);
	ovf_buf_printf(&b, "files:\n");
	for (size_t i = 0; i < env->nfiles; i++) {
		const struct ovf_file *f = &env->files[i];

		ovf_buf_printf(&b, "  %s %s", f->id ? f->id : "?", f->href ? f->href : "?");
		if (f->has_size)
			ovf_buf_printf(&b, " size %" PRIu64, f->size);
		if (f->compression)
			ovf_buf_printf(&b, " compression %s", f->compression);
		if (f->chunk_size)
			ovf_buf_printf(&b, " chunkSize %" PRIu64, f->chunk_size);
		ovf_buf_add(&b, "\n", 1);
	}
	ovf_buf_printf(&b, "disks:\n");
	for (size_t i = 0; i < env->ndisks; i++) {
		const struct ovf_disk *d = &env->disks[i];
		const char *fmt = d->format ? strrchr(d->format, '#') : NULL;

		if (d->has_capacity)
			human_size_1dp(d->capacity, sz, sizeof(sz));
		else
			snprintf(sz, sizeof(sz), "%s", d->capacity_text ? d->capacity_text : "?");
		ovf_buf_printf(&b, "  %s capacity %s (%" PRIu64 " bytes) file %s format %s\n",
			       d->disk_id ? d->disk_id : "?", sz, d->capacity,
			       d->file_ref ? d->file_ref : "(blank)",
			       fmt ? fmt + 1 : d->format ? d->format : "-");
	}
	ovf_buf_printf(&b, "networks:\n");
	for (size_t i = 0; i < env->nnetworks; i++)
		ovf_buf_printf(&b, "  %s\n", env->networks[i].name ? env->networks[i].name : "?");
	if (env->content)
		system_text(&b, env, env->content, 0);
	if (v)
		verify_text(&b, v);
	return ovf_buf_take(&b);
}

/* hardware.json of one system. */
char *ovf_system_hardware_json(const struct ovf_envelope *env,
			       const struct ovf_system *s)
{
	struct ovf_buf b = { 0 };

	hardware_json(&b, env, s);
	ovf_buf_add(&b, "\n", 1);
	return ovf_buf_take(&b);
}

/* product.json of one system. */
char *ovf_system_product_json(const struct ovf_system *s)
{
	struct ovf_buf b = { 0 };

	products_json(&b, s);
	ovf_buf_add(&b, "\n", 1);
	return ovf_buf_take(&b);
}

/* summary.txt of one system. */
char *ovf_system_summary(const struct ovf_envelope *env,
			 const struct ovf_system *s)
{
	struct ovf_buf b = { 0 };

	system_text(&b, env, s, 0);
	return ovf_buf_take(&b);
}
