/* SPDX-License-Identifier: Apache-2.0 */
/* create_descriptor.c - `ovf create`: the OVF descriptor of one virtual
 * system (OVF 1.x or 2.x): References, DiskSection, NetworkSection, the
 * guest OS and a VirtualHardwareSection with CPUs, memory, the controller(s),
 * the disks on them and one NIC per network. */
#include <stdio.h>
#include <stdlib.h>

#include "create_i.h"
#include "ovf.h"

/* Appends s to f with the five XML specials escaped. */
static void xml_text(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&apos;", f); break;
		default: fputc(*s, f);
		}
	}
}

/* One rasd Item: elements given already in the schema's (alphabetical)
   order as name/value pairs, NULL-terminated. */
static void item(FILE *f, const char *const *kv)
{
	fputs("      <Item>\n", f);
	for (; kv[0]; kv += 2) {
		fprintf(f, "        <rasd:%s>", kv[0]);
		xml_text(f, kv[1]);
		fprintf(f, "</rasd:%s>\n", kv[0]);
	}
	fputs("      </Item>\n", f);
}

/* Prints the descriptor for the converted disks to f. */
static void print_descriptor(FILE *f, const struct vm_spec *vm,
			     const struct disk_job *d, int nd)
{
	char a[64], b[64], c[64], e[64];

	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/%d\""
		" xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/%d\""
		" xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\""
		" xmlns:vmw=\"http://www.vmware.com/schema/ovf\""
		" xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\""
		" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\""
		" ovf:version=\"%s\">\n  <References>\n",
		vm->version, vm->version, vm->version == 2 ? "2.0" : "1.0");
	for (int i = 0; i < nd; i++) {
		fprintf(f, "    <File ovf:id=\"file%d\" ovf:href=\"", i + 1);
		xml_text(f, d[i].href);
		fprintf(f, "\" ovf:size=\"%llu\"/>\n",
			(unsigned long long)d[i].file_size);
	}
	fputs("  </References>\n  <DiskSection>\n"
	      "    <Info>Virtual disk information</Info>\n", f);
	for (int i = 0; i < nd; i++)
		fprintf(f, "    <Disk ovf:capacity=\"%llu\" ovf:capacityAllocationUnits=\"byte\""
			" ovf:diskId=\"vmdisk%d\" ovf:fileRef=\"file%d\" ovf:format=\"%s\""
			" ovf:populatedSize=\"%llu\"/>\n",
			(unsigned long long)d[i].capacity, i + 1, i + 1, STREAM_URI,
			(unsigned long long)d[i].populated);
	fputs("  </DiskSection>\n", f);
	if (vm->nnetworks) {
		fputs("  <NetworkSection>\n    <Info>The list of logical networks</Info>\n", f);
		for (int i = 0; i < vm->nnetworks; i++) {
			fputs("    <Network ovf:name=\"", f);
			xml_text(f, vm->networks[i]);
			fputs("\">\n      <Description>The ", f);
			xml_text(f, vm->networks[i]);
			fputs(" network</Description>\n    </Network>\n", f);
		}
		fputs("  </NetworkSection>\n", f);
	}
	fputs("  <VirtualSystem ovf:id=\"", f);
	xml_text(f, vm->name);
	fputs("\">\n    <Info>A virtual machine</Info>\n    <Name>", f);
	xml_text(f, vm->name);
	fprintf(f, "</Name>\n    <OperatingSystemSection ovf:id=\"%u\"", vm->os_id);
	if (vm->os_vmw) {
		fputs(" vmw:osType=\"", f);
		xml_text(f, vm->os_vmw);
		fputs("\"", f);
	}
	fputs(">\n      <Info>The kind of installed guest operating system</Info>\n", f);
	if (vm->os_description) {
		fputs("      <Description>", f);
		xml_text(f, vm->os_description);
		fputs("</Description>\n", f);
	}
	fputs("    </OperatingSystemSection>\n"
	      "    <VirtualHardwareSection>\n"
	      "      <Info>Virtual hardware requirements</Info>\n"
	      "      <System>\n"
	      "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n"
	      "        <vssd:InstanceID>0</vssd:InstanceID>\n"
	      "        <vssd:VirtualSystemIdentifier>", f);
	xml_text(f, vm->name);
	fputs("</vssd:VirtualSystemIdentifier>\n"
	      "        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>\n"
	      "      </System>\n", f);
	snprintf(a, sizeof(a), "%u virtual CPU(s)", vm->cpus);
	snprintf(b, sizeof(b), "%u", vm->cpus);
	item(f, (const char *const[]){ "AllocationUnits", "hertz * 10^6",
		"Description", "Number of Virtual CPUs", "ElementName", a,
		"InstanceID", "1", "ResourceType", "3", "VirtualQuantity", b,
		NULL });
	snprintf(a, sizeof(a), "%lluMB of memory", (unsigned long long)vm->memory_mib);
	snprintf(b, sizeof(b), "%llu", (unsigned long long)vm->memory_mib);
	item(f, (const char *const[]){ "AllocationUnits", "byte * 2^20",
		"Description", "Memory Size", "ElementName", a,
		"InstanceID", "2", "ResourceType", "4", "VirtualQuantity", b,
		NULL });
	{
		const struct ctl_kind *k = vm->ctl;
		int nctl = (nd + k->units - 1) / k->units, id = 3;
		char rt[16];

		if (nctl < 1)
			nctl = 1;
		snprintf(rt, sizeof(rt), "%u", k->rt);
		for (int i = 0; i < nctl; i++, id++) {
			char desc[64], name[64], addr[16], iid[16];

			snprintf(desc, sizeof(desc), "%s Controller", k->label);
			snprintf(name, sizeof(name), "%s controller %d", k->label, i);
			snprintf(addr, sizeof(addr), "%d", i);
			snprintf(iid, sizeof(iid), "%d", id);
			if (k->subtype)
				item(f, (const char *const[]){ "Address", addr,
					"Description", desc, "ElementName", name,
					"InstanceID", iid, "ResourceSubType", k->subtype,
					"ResourceType", rt, NULL });
			else
				item(f, (const char *const[]){ "Address", addr,
					"Description", desc, "ElementName", name,
					"InstanceID", iid, "ResourceType", rt, NULL });
		}
		for (int i = 0; i < nd; i++, id++) {
			int unit = i % k->units, ctl = 3 + i / k->units;
			char par[16];

			/* SCSI unit 7 is the controller's own */
			if (k->rt == OVF_RT_SCSI && unit >= 7)
				unit++;
			snprintf(a, sizeof(a), "%d", unit);
			snprintf(b, sizeof(b), "Hard disk %d", i + 1);
			snprintf(c, sizeof(c), "ovf:/disk/vmdisk%d", i + 1);
			snprintf(e, sizeof(e), "%d", id);
			snprintf(par, sizeof(par), "%d", ctl);
			item(f, (const char *const[]){ "AddressOnParent", a,
				"ElementName", b, "HostResource", c, "InstanceID", e,
				"Parent", par, "ResourceType", "17", NULL });
		}
		for (int i = 0; i < vm->nnetworks; i++, id++) {
			snprintf(a, sizeof(a), "%d", 7 + i);
			snprintf(b, sizeof(b), "Network adapter %d", i + 1);
			snprintf(e, sizeof(e), "%d", id);
			item(f, (const char *const[]){ "AddressOnParent", a,
				"AutomaticAllocation", "true", "Connection", vm->networks[i],
				"ElementName", b, "InstanceID", e,
				"ResourceSubType", vm->nic_subtype, "ResourceType", "10",
				NULL });
		}
	}
	fputs("    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n", f);
}

/* The descriptor as malloc'd text (*len bytes), or NULL. */
char *create_descriptor_text(const struct vm_spec *vm, const struct disk_job *d,
			     int nd, size_t *len)
{
	char *text = NULL;
	FILE *f = open_memstream(&text, len);

	if (!f)
		return NULL;
	print_descriptor(f, vm, d, nd);
	if (ferror(f) | fclose(f)) {
		free(text);
		return NULL;
	}
	return text;
}
