// Headless Chromium from Debian with WebGPU on SwiftShader (DESIGN.md), shared by the browser
// tests and scripts/bench-browser.mjs.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      // Playwright gives each launch a fresh profile and runs headless itself.
      "--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan",
      "--use-angle=swiftshader", "--use-webgpu-adapter=swiftshader",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-quic", "--no-first-run",
    ],
  });
}
