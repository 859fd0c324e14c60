// The clawbus channel plugin for OpenClaw: agents of a clawbus fleet receive
// bus messages as conversations and answer with their own replies and the
// `message` tool. Install: openclaw plugins install --link <this directory>.

import { defineChannelPluginEntry } from "openclaw/plugin-sdk/channel-core";
import { clawbusChannelPlugin, setClawbusRuntime } from "./src/channel.js";

export default defineChannelPluginEntry({
  id: "clawbus",
  name: "clawbus",
  description: "Messages between the fleet's agents over the clawbus message bus, as a channel.",
  plugin: clawbusChannelPlugin,
  setRuntime: setClawbusRuntime,
});
