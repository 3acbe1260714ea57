// Independent SMPP codec peer for the cross-check tests: the npm `smpp` package's PDU
// class, driven by JSON lines on stdin, one JSON line answered per request on stdout.
//
//   {"op":"describe"}                         -> {"tlvs":{name:{id,type,multiple}}, "commands":{name:{id,params:[...]}}}
//   {"op":"encode","command":"submit_multi","fields":{...}}  -> {"hex":"..."}
//   {"op":"decode","hex":"..."}              -> {"command", "command_id", "command_status",
//                                                "sequence_number", "fields", "tlvs"}
//
// Octet strings travel as {"hex": "..."}. The package's convenience filters (text
// encodings, Date conversion of time fields, callback_num objects) are switched off so
// that the values compared are the wire values themselves.
'use strict';

const readline = require('readline');
const smpp = require('smpp');
const defs = require('smpp/lib/defs');

for (const name of Object.keys(defs.commands)) {
	const params = defs.commands[name].params || {};
	for (const key of Object.keys(params)) {
		delete params[key].filter;
	}
}
for (const name of Object.keys(defs.tlvs)) {
	delete defs.tlvs[name].filter;
}

const typeNames = new Map([
	[defs.types.tlv.int8, 'int8'],
	[defs.types.tlv.int16, 'int16'],
	[defs.types.tlv.int32, 'int32'],
	[defs.types.tlv.cstring, 'cstring'],
	[defs.types.tlv.string, 'string'],
	[defs.types.tlv.buffer, 'buffer'],
]);

function toJson(value) {
	if (Buffer.isBuffer(value)) {
		return {hex: value.toString('hex')};
	}
	if (Array.isArray(value)) {
		return value.map(toJson);
	}
	if (value !== null && typeof value === 'object') {
		const out = {};
		for (const key of Object.keys(value)) {
			out[key] = toJson(value[key]);
		}
		return out;
	}
	return value;
}

function fromJson(value) {
	if (Array.isArray(value)) {
		return value.map(fromJson);
	}
	if (value !== null && typeof value === 'object') {
		if (Object.keys(value).length === 1 && typeof value.hex === 'string') {
			return Buffer.from(value.hex, 'hex');
		}
		const out = {};
		for (const key of Object.keys(value)) {
			out[key] = fromJson(value[key]);
		}
		return out;
	}
	return value;
}

function describe() {
	const tlvs = {};
	for (const name of Object.keys(defs.tlvs)) {
		const tlv = defs.tlvs[name];
		if (tlv.tag !== name) {
			continue; // an alias
		}
		tlvs[name] = {id: tlv.id, type: typeNames.get(tlv.type) || 'other', multiple: !!tlv.multiple};
	}
	const commands = {};
	for (const name of Object.keys(defs.commands)) {
		commands[name] = {id: defs.commands[name].id, params: Object.keys(defs.commands[name].params || {})};
	}
	return {tlvs, commands};
}

function encode(command, fields) {
	const pdu = new smpp.PDU(command, fromJson(fields));
	return {hex: pdu.toBuffer().toString('hex')};
}

function decode(hex) {
	const pdu = smpp.PDU.fromBuffer(Buffer.from(hex, 'hex'));
	if (!pdu) {
		return {error: 'not a whole PDU'};
	}
	const params = (defs.commands[pdu.command] || {}).params || {};
	const fields = {};
	const tlvs = {};
	for (const key of Object.keys(pdu)) {
		if (key in params) {
			fields[key] = toJson(pdu[key]);
		} else if (key in defs.tlvs) {
			tlvs[String(defs.tlvs[key].id)] = toJson(pdu[key]);
		} else if (/^[0-9]+$/.test(key)) {
			tlvs[key] = toJson(pdu[key]); // a tag the package does not know: raw octets
		}
	}
	return {
		command: pdu.command,
		command_id: pdu.command_id,
		command_status: pdu.command_status,
		sequence_number: pdu.sequence_number,
		fields,
		tlvs,
	};
}

function handle(line) {
	const request = JSON.parse(line);
	switch (request.op) {
		case 'describe':
			return describe();
		case 'encode':
			return encode(request.command, request.fields || {});
		case 'decode':
			return decode(request.hex);
		default:
			return {error: 'unknown op ' + request.op};
	}
}

const rl = readline.createInterface({input: process.stdin, terminal: false});
rl.on('line', (line) => {
	if (!line.trim()) {
		return;
	}
	let reply;
	try {
		reply = handle(line);
	} catch (err) {
		reply = {error: String(err && err.stack || err)};
	}
	process.stdout.write(JSON.stringify(reply) + '\n');
});
