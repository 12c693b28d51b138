/** The device layer: mapped devdax devices and emulation files, as famfs Media. */
export { DaxDevice, openDevice, type DeviceKind, type OpenDeviceOptions } from './dax-device.js';
export { DeviceError, toDeviceError, type DeviceErrorCode } from './errors.js';
export { loadNative, type NativeDeviceAddon, type NativeDeviceHandle, type NativeOpenOptions, type NativeOffset } from './native.js';
